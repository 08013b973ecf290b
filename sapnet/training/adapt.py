"""Adapting a derain network to real rain that has no ground truth (the ``real`` section of a training config).

Semi-supervised, in the manner of Xu et al. (ECCV 2024): every training step carries, beside the synthetic pairs
(``data.clean``: rain rendered on clean photos on the fly), a batch of real rainy patches whose targets are
pseudo-labels (:class:`~sapnet.training.PseudoLabelBank`): the best restoration of each real photo found so far
by teachers and the student, ranked by no-reference IQA, updated every ``real.update_every`` epochs. The real
patches are trained with SSIM + L1 against their labels and, where weighted, SAPNet's unsupervised segmentation
term and the perceptual contrastive term (the rainy photo as the negative). ``best.pt`` is chosen on held-out
real photos by :meth:`RealAdaptation.score_heldout`.

:class:`RealAdaptation` owns all of that; :class:`~sapnet.training.Trainer` calls it when ``real.photos`` is set.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from sapnet.data import DatasetError, DatasetNotFoundError, ImageReadError, fit_max_side, list_images, quantize_8bit
from sapnet.data.listing import read_name_list
from sapnet.inference import derain
from sapnet.losses.combined import LossWeights, SAPNetLoss
from sapnet.metrics import METRICS
from sapnet.training.config import ConfigError, TrainConfig
from sapnet.training.data import mix_seed
from sapnet.training.pseudo_labels import (
    PseudoLabelBank,
    PseudoLabelWarning,
    PseudoPairs,
    Teacher,
    model_teacher,
    pseudo_label_loss,
    read_rgb,
    registry_teachers,
    with_hflip_averages,
    with_kept_input,
)

__all__ = ["REAL_TERMS", "RealAdaptation"]

REAL_TERMS = ("pseudo", "real_ubs", "real_contrastive")
"""Names of the real-photo loss terms in ``log.csv`` (unweighted values; ``pseudo`` is SSIM + ``pseudo_l1`` L1)."""

_STATE_VERSION = 1


def _listed(list_file: str, by_name: Mapping[str, Path], folder: Path) -> list[Path]:
    try:
        names = read_name_list(list_file)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"real: {e}") from None
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DatasetError(
            f"{list_file}: {len(missing)} listed photo(s) not in {folder} (e.g. {missing[0]!r}); is real.photos the "
            "folder this list was made for?"
        )
    return [by_name[n] for n in names]


class RealAdaptation:
    """The real-photo side of a training run: the photos (adaptation and held-out), the pseudo-label bank, its
    teachers, the real batches, their loss and the held-out score.

    Args:
        config: the run's config; its ``real`` section must have ``photos`` set.
        out: the run's output folder (the bank's store is ``out/pseudo_labels``).
        device: where the full-photo passes run (the network's device).
        log: receives one line per update and per held-out scoring.

    Raises:
        DatasetNotFoundError: ``real.photos`` is not a folder.
        DatasetError: a listed photo not in the folder, no usable adaptation photo (see
            :class:`~sapnet.training.PseudoLabelBank`), or no usable held-out photo.
        ConfigError: unreadable name lists, or a photo both in ``real.images`` and ``real.heldout`` (the
            adaptation must never see the held-out photos).
        sapnet.losses.BackboneUnavailableError: ``real.ubs`` / ``real.contrastive`` weighted and their pretrained
            networks missing.
    """

    def __init__(self, config: TrainConfig, out: Path, device: torch.device, log: Callable[[str], None]) -> None:
        r = config.real
        if r.photos is None:
            raise ConfigError("real.photos is not set: no real-photo adaptation")
        self.settings = r
        self.device = device
        self.log = log
        self.seed = config.run.seed
        folder = Path(r.photos)
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{folder}: real-photo folder (real.photos) not found")
        files = list_images(folder)
        if not files:
            raise DatasetError(f"{folder}: no image files; real-photo adaptation needs at least one RGB photo")
        by_name = {p.name: p for p in files}
        heldout = _listed(r.heldout, by_name, folder) if r.heldout is not None else []
        if r.images is not None:
            adapt = _listed(r.images, by_name, folder)
            both = sorted({p.name for p in adapt} & {p.name for p in heldout})
            if both:
                raise ConfigError(
                    f"real: {len(both)} photo(s) are both adaptation and held-out photos (e.g. {both[0]!r}); the "
                    "adaptation must never see the held-out photos"
                )
        else:
            held = set(heldout)
            adapt = [p for p in files if p not in held]
        if not adapt:
            raise DatasetError(f"{folder}: no photos left to adapt on (all are held out)")
        self.bank = PseudoLabelBank(adapt, r.metrics, store=out / "pseudo_labels", max_side=r.max_side)
        self.select = list(r.select_metrics or r.metrics)
        self.rainy_means: dict[str, float] = {}
        """The held-out rainy photos' mean score under each selection metric."""
        self.heldout = self._read_heldout(heldout)
        self.patch = config.data.patch
        self.hflip, self.vflip = config.data.hflip, config.data.vflip
        self.updated_epoch: int | None = None
        self.pairs: PseudoPairs | None = None
        self.extra_loss: SAPNetLoss | None = None
        if r.ubs > 0 or r.contrastive > 0:
            lc = config.loss
            self.extra_loss = SAPNetLoss(
                LossWeights(ssim=0.0, ubs=r.ubs, contrastive=r.contrastive, lpips=0.0),
                backbones="random" if lc.backbones == "random" else "imagenet",
                seg_arch=lc.seg_arch,
                seg_encoder=lc.seg_encoder,
                weight_files=lc.weight_files,
                seed=config.run.seed,
            ).to(device)
        log(
            f"real photos: {len(self.bank)} to adapt on, {len(self.heldout)} held out, from {folder}"
            + (f" (larger than {r.max_side} px downscaled)" if r.max_side is not None else "")
        )

    def _read_heldout(self, paths: list[Path]) -> list[tuple[str, torch.Tensor]]:
        """The held-out photos (downscaled to ``max_side``) that every selection metric can score; the others
        are skipped with one warning. Sets :attr:`rainy_means`."""
        photos, skipped = [], []
        inputs: dict[str, list[float]] = {k: [] for k in self.select}
        for path in paths:
            try:
                x = fit_max_side(read_rgb(path), self.settings.max_side)
                scores = {k: float(METRICS[k].fn(x, None)) for k in self.select}
            except (ImageReadError, ValueError) as e:
                skipped.append(f"{path.name}: {str(e).removeprefix(f'{path}: ')}")
                continue
            photos.append((path.name, x))
            for k, v in scores.items():
                inputs[k].append(v)
        if skipped:
            warnings.warn(
                PseudoLabelWarning(f"held-out photos: skipped {len(skipped)}: {'; '.join(skipped)}"), stacklevel=3
            )
        if paths and not photos:
            raise DatasetError("real.heldout: none of the listed photos is a readable RGB image every metric scores")
        self.rainy_means = {k: sum(v) / len(v) for k, v in inputs.items()} if photos else {}
        return photos

    # -- pseudo-labels --

    def due(self, epoch: int) -> bool:
        """Whether the labels are to be updated at the start of ``epoch`` (every ``real.update_every`` epochs,
        once each)."""
        return epoch % self.settings.update_every == 0 and (self.updated_epoch is None or self.updated_epoch < epoch)

    def candidates(self, student: nn.Module) -> dict[str, Teacher]:
        """This update's candidates: at the first update the teachers (loaded now, dropped after), then the
        student (``student`` as it is now, e.g. the EMA weights), each with its flip average if ``real.flip``, then
        each of those with the rainy photo's pixels kept where it changed them little, per ``real.keep``
        threshold (:func:`~sapnet.training.with_kept_input`)."""
        r = self.settings
        out: dict[str, Teacher] = {}
        if self.bank.updates == 0 and r.teachers:
            out.update(registry_teachers(r.teachers, device=self.device, tile=r.tile, flip=r.flip))
        if r.student:
            own = {"student": model_teacher(student, device=self.device, tile=r.tile)}
            out.update(with_hflip_averages(own) if r.flip else own)
        return with_kept_input(out, r.keep)

    def update(self, student: nn.Module, epoch: int, *, progress: bool = False) -> None:
        """Update the bank with :meth:`candidates` and make this epoch's real patches from its labels."""
        summary = self.bank.update(self.candidates(student), epoch, progress=progress)
        self.updated_epoch = int(epoch)
        self.log(f"pseudo-labels {summary.describe()}; {len(self.bank.labelled())} of {len(self.bank)} labelled")
        self._make_pairs()

    def _make_pairs(self) -> None:
        self.pairs = None
        if self.bank.labelled():
            self.pairs = PseudoPairs(self.bank, self.patch, hflip=self.hflip, vflip=self.vflip, seed=self.seed)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The real patches of optimiser step ``step`` (0-based, over the run): ``real.batch_size`` (rainy, label)
        pairs, each (B, 3, patch, patch) float32 in [0, 1], drawn from the labelled photos by a generator seeded
        from ``(seed, step)`` (so a resumed run draws the same); ``None`` while no photo has a label."""
        if self.pairs is None:
            return None
        n, k = len(self.pairs), self.settings.batch_size
        g = torch.Generator().manual_seed(mix_seed(self.seed, 0x5EA1, step))
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-k // n))])[:k]
        self.pairs.set_epoch(step)
        items = [self.pairs[int(i)] for i in order]
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])

    def loss(
        self, output: torch.Tensor, label: torch.Tensor, rainy: torch.Tensor, epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted real-patch loss and its unweighted terms (:data:`REAL_TERMS` that are weighted).

        Args:
            output: (B, 3, P, P) float, the network's restoration of ``rainy`` (gradients flow to it).
            label: (B, 3, P, P) float in [0, 1], the pseudo-labels.
            rainy: (B, 3, P, P) float in [0, 1], the real rainy patches (the contrastive negative).
        """
        r = self.settings
        pseudo = pseudo_label_loss(output, label, l1_weight=r.pseudo_l1)
        total = r.pseudo * pseudo
        terms = {"pseudo": float(pseudo.detach())}
        if self.extra_loss is not None:
            extra, parts = self.extra_loss(output, label, rainy, epoch=epoch)
            total = total + extra
            terms.update({f"real_{k}": float(v) for k, v in parts.items()})
        return total, terms

    # -- held-out score --

    def _means(self, photos: list[torch.Tensor]) -> dict[str, float]:
        means = {}
        for key in self.select:
            values = [float(METRICS[key].fn(x, None)) for x in photos]
            means[key] = sum(values) / len(values)
        return means

    @torch.no_grad()
    def score_heldout(self, net: nn.Module, *, progress: bool = False) -> dict[str, float] | None:
        """Mean ``select_metrics`` of ``net``'s restorations of the held-out photos (quantised as the evaluation
        protocol saves them, ``floor``), as ``real_<metric>``, and ``real_score``: the mean over the metrics of
        (model mean / rainy-input mean), lower is better (1: no better than the rainy photos). ``None`` without
        held-out photos. ``net``'s train / eval mode is restored."""
        if not self.heldout:
            return None
        was_training = net.training
        outputs = []
        try:
            for _, x in tqdm(self.heldout, desc="held-out", unit="img", disable=not progress, leave=False):
                y = derain(x, net, device=self.device, tile=self.settings.tile)
                outputs.append(quantize_8bit(y.float().cpu(), "floor"))
        finally:
            net.train(was_training)
        means = self._means(outputs)
        score = sum(means[k] / self.rainy_means[k] for k in self.select) / len(self.select)
        return {f"real_{k}": v for k, v in means.items()} | {"real_score": score}

    @property
    def score_columns(self) -> list[str]:
        """The keys :meth:`score_heldout` returns (empty without held-out photos)."""
        return [f"real_{k}" for k in self.select] + ["real_score"] if self.heldout else []

    # -- state --

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state for a training checkpoint: the bank's and the last update's epoch."""
        return {"version": _STATE_VERSION, "bank": self.bank.state_dict(), "updated_epoch": self.updated_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the same photos, metrics and output folder).

        Raises:
            ValueError: another version, or a bank state that does not fit (see
                :meth:`~sapnet.training.PseudoLabelBank.load_state_dict`).
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"real-photo state: version {state.get('version')!r}, expected {_STATE_VERSION}")
        self.bank.load_state_dict(state["bank"])
        self.updated_epoch = None if state["updated_epoch"] is None else int(state["updated_epoch"])
        self._make_pairs()
