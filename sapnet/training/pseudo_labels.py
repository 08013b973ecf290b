"""Pseudo-labels for real rainy photos (no ground truth), chosen by no-reference image quality.

Semi-supervised adaptation in the manner of Xu et al., "Towards Real-World Adverse Weather Image Restoration"
(ECCV 2024): each real photo gets candidate restorations (teacher networks, the student as it trains, their
horizontal-flip averages, each with the rainy photo's own pixels kept where it changed them little); no-reference
IQA metrics rank them, the best becomes the photo's pseudo-label, and a
label is replaced at a later update only when a new candidate ranks strictly better than it.

* :class:`PseudoLabelBank`: the real photos, their current labels (8-bit PNG files in a store folder) and the
  labels' per-metric scores; :meth:`~PseudoLabelBank.update` once per epoch; :meth:`~PseudoLabelBank.state_dict`
  / :meth:`~PseudoLabelBank.load_state_dict` (plain types) so a training checkpoint carries it.
* Candidates (:data:`Teacher`: a function image -> image): :func:`model_teacher`, :func:`registry_teachers`,
  :func:`hflip_average`, :func:`with_hflip_averages`, :func:`kept_input`, :func:`with_kept_input`
  (:func:`sapnet.models.keep_unchanged`).
* The ranking: :func:`mean_ranks`, :func:`rank_order`.
* Training on the labels: :class:`PseudoPairs` (random paired patches), :func:`pseudo_label_loss` /
  :class:`PseudoLabelLoss` (SSIM + L1).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from sapnet.data import (
    DatasetError,
    DatasetNotFoundError,
    ImageConversionWarning,
    ImageReadError,
    fit_max_side,
    list_images,
    quantize_8bit,
    read_image,
    write_image,
)
from sapnet.files import atomic_write
from sapnet.inference import derain
from sapnet.losses import ssim_loss
from sapnet.metrics import METRICS, ImageMetric
from sapnet.models import keep_unchanged, load_model
from sapnet.training.data import random_patch

__all__ = [
    "DEFAULT_PSEUDO_METRICS",
    "INPUT",
    "PseudoLabel",
    "PseudoLabelBank",
    "PseudoLabelLoss",
    "PseudoLabelWarning",
    "PseudoPairs",
    "Teacher",
    "UpdateSummary",
    "hflip_average",
    "kept_input",
    "mean_ranks",
    "model_teacher",
    "pseudo_label_loss",
    "rank_order",
    "read_rgb",
    "registry_teachers",
    "with_hflip_averages",
    "with_kept_input",
]

Teacher = Callable[[torch.Tensor], torch.Tensor]
"""A candidate restoration: float (3, H, W) in [0, 1] (CPU) -> float (3, H, W) of the same size, nominally in
[0, 1] (the bank clamps and rounds it to 8 bits before scoring it)."""

DEFAULT_PSEUDO_METRICS = ("brisque", "niqe")
"""The metrics ranking the candidates by default (both lower-is-better, no reference)."""

INPUT = "input"
"""The source name of a photo's initial label, the rainy photo itself (reserved: no candidate may be so named)."""

_STATE_VERSION = 1
_LABEL_DIR = "labels"
_INPUT_DIR = "inputs"
_STATE_FILE = "bank.json"


class PseudoLabelWarning(UserWarning):
    """Something the pseudo-label bank left out: an unreadable or non-RGB real photo, a metric that cannot score
    a photo, a candidate that cannot be scored."""


# ----------------------------------------------------------------------------------------------------- ranking


def mean_ranks(table: Sequence[Sequence[float]], higher_is_better: Sequence[bool] | None = None) -> list[float]:
    """The mean rank of each row of ``table`` (``table[i][j]``: entry i's score under metric j); lower is better.

    Under each metric j, entry i's rank is ``1 + (number of entries strictly better) + (number of other entries
    equal) / 2`` (the fractional ranking: tied entries share the mean of the places they occupy), "better" being
    lower, or higher where ``higher_is_better[j]`` (default: all lower-is-better). The mean rank of an entry is
    the mean of its ranks over the metrics. With n entries it lies in [1, n].

    Examples:
        >>> mean_ranks([[1.0, 9.0], [2.0, 5.0], [3.0, 5.0]])
        [2.0, 1.75, 2.25]
    """
    n = len(table)
    if n == 0:
        return []
    m = len(table[0])
    if m == 0 or any(len(row) != m for row in table):
        raise ValueError(f"mean_ranks: every row needs the same, non-zero number of scores, got {table}")
    directions = [False] * m if higher_is_better is None else list(higher_is_better)
    if len(directions) != m:
        raise ValueError(f"mean_ranks: {m} metrics but {len(directions)} directions")
    total = [0.0] * n
    for j in range(m):
        column = [-row[j] if directions[j] else row[j] for row in table]
        for i, s in enumerate(column):
            better = sum(1 for t in column if t < s)
            equal = sum(1 for t in column if t == s) - 1
            total[i] += 1 + better + equal / 2
    return [t / m for t in total]


def rank_order(table: Sequence[Sequence[float]], higher_is_better: Sequence[bool] | None = None) -> list[int]:
    """Row indices of ``table``, best first: by :func:`mean_ranks`, then by the first metric's score (oriented
    by ``higher_is_better``), then by row index (an earlier row wins a complete tie).

    Examples:
        >>> rank_order([[1.0, 9.0], [2.0, 5.0], [3.0, 5.0]])
        [1, 0, 2]
        >>> rank_order([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0]])  # mean ranks all 2: the first metric, then the row
        [1, 0, 2]
    """
    ranks = mean_ranks(table, higher_is_better)
    first_up = bool(higher_is_better[0]) if higher_is_better else False
    return sorted(range(len(table)), key=lambda i: (ranks[i], -table[i][0] if first_up else table[i][0], i))


# -------------------------------------------------------------------------------------------------- candidates


def model_teacher(
    model: nn.Module, *, device: torch.device | str | None = None, tile: int | None = None, flip: bool = False
) -> Teacher:
    """A :data:`Teacher` running ``model`` through :func:`sapnet.derain` (no gradients; ``tile`` as there).

    The model's train/eval mode is restored after each call, so the student being trained can be a candidate
    (``derain`` sets eval mode and channels_last memory format in place; the values do not change).
    ``flip``: return :func:`hflip_average` of it.
    """

    def run(x: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        try:
            with torch.no_grad():
                out: torch.Tensor = derain(x, model, device=device, tile=tile)
        finally:
            model.train(was_training)
        return out

    return hflip_average(run) if flip else run


def registry_teachers(
    names: Iterable[str],
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    tile: int | None = None,
    flip: bool = False,
) -> dict[str, Teacher]:
    """Teachers by name: each of ``names`` (a registry name such as ``"prenet.rain100h"``, or a checkpoint path:
    anything :func:`sapnet.load_model` takes) loaded with ``weights_dir`` / ``device`` and wrapped by
    :func:`model_teacher`. With ``flip``, each name also gets its flip average as ``"<name>+hflip"``
    (:func:`with_hflip_averages`).

    Raises:
        KeyError, sapnet.CheckpointError: as :func:`sapnet.load_model` (unknown name, weights not available).
    """
    teachers = {
        name: model_teacher(load_model(name, device=device, weights_dir=weights_dir), device=device, tile=tile)
        for name in names
    }
    return with_hflip_averages(teachers) if flip else teachers


def hflip_average(teacher: Teacher) -> Teacher:
    """The mean of ``teacher(x)`` and ``flip(teacher(flip(x)))``, flipping left-right (the last dimension)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        return (teacher(x) + teacher(x.flip(-1)).flip(-1)) / 2

    return run


def with_hflip_averages(teachers: Mapping[str, Teacher]) -> dict[str, Teacher]:
    """``teachers`` and, after them, each one's :func:`hflip_average` named ``"<name>+hflip"``; the pair shares
    the unflipped pass (called with the same tensor object, the second call reuses the first's result), so the
    two cost three passes, not four."""
    shared = {name: _reuse_last(t) for name, t in teachers.items()}
    out = dict(shared)
    out.update({f"{name}+hflip": hflip_average(t) for name, t in shared.items()})
    return out


def kept_input(teacher: Teacher, threshold: float) -> Teacher:
    """``teacher`` followed by :func:`~sapnet.models.keep_unchanged` with ``threshold`` (the rainy photo's pixels
    put back where the teacher changed them by at most ``threshold``)."""
    if not 0 < threshold < 1:
        raise ValueError(f"kept_input: threshold {threshold} is outside (0, 1)")

    def run(x: torch.Tensor) -> torch.Tensor:
        return keep_unchanged(x, teacher(x), threshold)

    return run


def with_kept_input(teachers: Mapping[str, Teacher], thresholds: Sequence[float]) -> dict[str, Teacher]:
    """``teachers`` and, after them, each one's :func:`kept_input` for each threshold, named
    ``"<name>+keep<threshold>"`` (e.g. ``"student+keep0.02"``); the variants share their teacher's pass, so they
    cost a metric score each, not a network pass."""
    if not thresholds:
        return dict(teachers)
    shared = {name: _reuse_last(t) for name, t in teachers.items()}
    out = dict(shared)
    out.update({f"{name}+keep{t:g}": kept_input(shared[name], t) for name in teachers for t in thresholds})
    return out


def _reuse_last(teacher: Teacher) -> Teacher:
    """``teacher``, answering a call with the very tensor object of the previous call from memory."""
    last: list[tuple[torch.Tensor, torch.Tensor]] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        if last and last[0][0] is x:
            return last[0][1]
        y = teacher(x)
        last[:] = [(x, y)]
        return y

    return run


# ---------------------------------------------------------------------------------------------------- the bank


@dataclass
class PseudoLabel:
    """One real photo's current label.

    Attributes:
        source: the candidate that produced it, or :data:`INPUT` while the label is the rainy photo itself.
        epoch: the epoch of the update that chose it.
        scores: its raw score under each metric used for this photo (metrics that cannot score the photo are
            absent); later candidates are ranked against these stored values.
        file: the label's PNG file, relative to the store folder; ``None`` for :data:`INPUT`.
    """

    source: str
    epoch: int
    scores: dict[str, float]
    file: str | None = None


@dataclass
class UpdateSummary:
    """What one :meth:`PseudoLabelBank.update` did.

    Attributes:
        epoch: the epoch passed.
        images: photos ranked (the bank's photos less those no metric can score).
        replaced: candidate name -> labels it replaced (candidates replacing none are absent).
        kept: photos whose label stayed.
        label_means: metric -> the mean score of the bank's labels after the update (over the photos it scores).
        candidate_means: candidate -> metric -> its mean score over the photos (how each teacher is doing).
        excluded: photos left out at this update because no metric can score them.
    """

    epoch: int
    images: int
    replaced: dict[str, int]
    kept: int
    label_means: dict[str, float]
    candidate_means: dict[str, dict[str, float]]
    excluded: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for a log, e.g. ``epoch 3: 5 of 12 labels replaced (student 4, prenet 1); brisque 21.300, ...``."""
        by = ", ".join(f"{k} {v}" for k, v in self.replaced.items())
        means = ", ".join(f"{k} {v:.3f}" for k, v in self.label_means.items())
        replaced = sum(self.replaced.values())
        return (
            f"epoch {self.epoch}: {replaced} of {self.images} labels replaced"
            + (f" ({by})" if by else "")
            + (f"; {means}" if means else "")
        )


def read_rgb(path: str | os.PathLike[str]) -> torch.Tensor:
    """:func:`sapnet.read_image` of a photo that must already be RGB: float32 (3, H, W) in [0, 1].

    Raises:
        ImageReadError: as ``read_image`` (missing, not an image, undecodable).
        ValueError: a file ``read_image`` would have to convert (grayscale, alpha, palette); other warnings pass
            through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = read_image(path)
    converted: list[ImageConversionWarning] = []
    for w in caught:
        if isinstance(w.message, ImageConversionWarning):
            converted.append(w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if converted:
        raise ValueError(f"{converted[0].found}, not an RGB photo")
    return x


class PseudoLabelBank:
    """Real rainy photos and their pseudo-labels.

    Each photo (named by its file's stem, e.g. ``"IMG_0042"``) starts with its rainy self as the label (source
    :data:`INPUT`, scored at the first update), so a label is never worse than the input under the ranking; a
    photo whose label is still its input gets no training pairs (:class:`PseudoPairs`). At every
    :meth:`update`, every candidate restores every photo; for one photo, the pool is the current label (its
    stored scores) followed by the candidates in the order given, each candidate clamped to [0, 1] and rounded
    to 8 bits (what the PNG label stores and training reads) and scored by each metric; the pool is ordered by
    :func:`rank_order` (mean rank over the metrics, then the first metric's score, then pool position) and the
    first becomes the label. The current label comes first in the pool, so it is replaced only by a candidate
    ranking strictly better; a complete tie keeps it.

    A metric that cannot score a photo's input (``ValueError``, e.g. NIQE under 192x96 pixels, or a non-finite
    score) is dropped for that photo, with a :class:`PseudoLabelWarning`; a photo no metric can score is left out
    (reported, :attr:`excluded`). A candidate a metric cannot score is left out of that photo's pool (warning).

    Files: the labels are 8-bit PNGs ``labels/<name>-u<update>.png`` in ``store``, and ``bank.json`` records the
    latest state. A replaced label's file is deleted at the update after the one replacing it, so the state of
    the latest and of the previous update (e.g. the last checkpoint, if a run stops mid-update) both stay
    loadable.

    Args:
        root_or_files: a folder of real photos (:func:`sapnet.data.list_images`: natural order, hidden files
            skipped) or a list of image files.
        metrics: metric names of :data:`sapnet.metrics.METRICS` without a reference (default
            :data:`DEFAULT_PSEUDO_METRICS`), or :class:`~sapnet.metrics.ImageMetric` objects (named by
            ``spec.key``); the first breaks mean-rank ties.
        store: the folder for the label files (created).
        max_side: photos with a longer side are downscaled to it (:func:`sapnet.data.fit_max_side`) and the bank
            works on that copy, an 8-bit PNG ``inputs/<name>.png`` in ``store`` (:attr:`files` names it;
            :attr:`originals` the photo it came from). ``None``: full size.

    Raises:
        DatasetNotFoundError: ``root_or_files`` is a missing folder.
        DatasetError: no usable photo (the message names the folder and what was skipped), or two photos with the
            same stem.
        ValueError: an unknown or paired (reference) metric, or none.

    Unreadable files and files that are not RGB (grayscale, with alpha: :func:`sapnet.read_image` would have to
    convert them) are skipped with one :class:`PseudoLabelWarning` and listed in :attr:`skipped`.
    """

    def __init__(
        self,
        root_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        metrics: Sequence[str | ImageMetric] = DEFAULT_PSEUDO_METRICS,
        *,
        store: str | os.PathLike[str],
        max_side: int | None = None,
    ) -> None:
        self.metrics: dict[str, ImageMetric] = _resolve_metrics(metrics)
        self.store = Path(store)
        if isinstance(root_or_files, (str, os.PathLike)):
            self.root: Path | None = Path(root_or_files)
            if not self.root.is_dir():
                raise DatasetNotFoundError(f"{self.root}: real-photo folder not found")
            files = list_images(self.root)
            where = str(self.root)
        else:
            self.root = None
            files = [Path(p) for p in root_or_files]
            where = "the given file list"
        self.skipped: dict[Path, str] = {}
        self.files: dict[str, Path] = {}
        self.originals: dict[str, Path] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        for path in files:
            try:
                x = read_rgb(path)
            except (ImageReadError, ValueError) as e:
                self.skipped[path] = str(e).removeprefix(f"{path}: ")
                continue
            if path.stem in self.files:
                raise DatasetError(f"{where}: {self.files[path.stem]} and {path} have the same name {path.stem!r}")
            self.files[path.stem] = self.originals[path.stem] = path
            if max_side is not None and max(x.shape[-2:]) > max_side:
                x = fit_max_side(x, max_side)
                self.files[path.stem] = write_image(x, self.store / _INPUT_DIR / f"{path.stem}.png")
            self.sizes[path.stem] = (x.shape[-1], x.shape[-2])
        if self.skipped:
            listed = "; ".join(f"{p.name}: {why}" for p, why in self.skipped.items())
            warnings.warn(PseudoLabelWarning(f"{where}: skipped {len(self.skipped)} file(s): {listed}"), stacklevel=2)
        if not self.files:
            found = f"{len(files)} image file(s), none usable" if files else "no image files"
            raise DatasetError(f"{where}: {found}; the pseudo-label bank needs at least one readable RGB photo")
        self.labels: dict[str, PseudoLabel] = {}
        self.excluded: dict[str, str] = {}
        self.updates = 0
        self._superseded: list[str] = []

    @property
    def names(self) -> list[str]:
        """The photos' names, in file order."""
        return list(self.files)

    def labelled(self) -> list[str]:
        """Names of the photos whose label is a candidate's restoration (not the input), in file order."""
        return [n for n in self.files if n in self.labels and self.labels[n].source != INPUT]

    def label_path(self, name: str) -> Path:
        """The file holding photo ``name``'s label (the rainy photo itself while the source is :data:`INPUT`)."""
        label = self.labels.get(name)
        if label is None or label.file is None:
            return self.files[name]
        return self.store / label.file

    def _score(self, x: torch.Tensor, metrics: Sequence[str]) -> tuple[dict[str, float], dict[str, str]]:
        """Scores of ``x`` under ``metrics``, and metric -> why it cannot score ``x``."""
        scores: dict[str, float] = {}
        failed: dict[str, str] = {}
        for key in metrics:
            try:
                value = float(self.metrics[key].fn(x, None))
            except ValueError as e:
                failed[key] = str(e)
                continue
            if math.isfinite(value):
                scores[key] = value
            else:
                failed[key] = f"score {value}"
        return scores, failed

    def _initial(self, name: str, x: torch.Tensor, epoch: int) -> tuple[PseudoLabel | None, str]:
        """The input as the initial label, or ``None`` and why when no metric can score it."""
        scores, failed = self._score(x, list(self.metrics))
        for key, why in failed.items():
            warnings.warn(
                PseudoLabelWarning(f"photo {name!r}: {key} cannot score it ({why}); ranked without it"), stacklevel=3
            )
        if not scores:
            warnings.warn(
                PseudoLabelWarning(f"photo {name!r}: no metric can score it; left out of the bank"), stacklevel=3
            )
            return None, "; ".join(f"{k}: {v}" for k, v in failed.items())
        return PseudoLabel(INPUT, int(epoch), scores), ""

    def update(self, candidates: Mapping[str, Teacher], epoch: int, *, progress: bool = False) -> UpdateSummary:
        """Restore every photo with every candidate and keep, per photo, the best of its label and them.

        Args:
            candidates: name -> :data:`Teacher` (see the class docstring for how the pool is ranked). The order
                matters only for complete ties (the earlier candidate wins).
            epoch: recorded with the labels chosen now.
            progress: a tqdm bar over the photos.

        An update that raises (a candidate's error) leaves the bank's state as it was.

        Raises:
            ValueError: no candidates, a candidate named :data:`INPUT`, or one returning another shape than (3, H, W)
                of its input.
        """
        if not candidates:
            raise ValueError("update: no candidates")
        if INPUT in candidates:
            raise ValueError(f"update: {INPUT!r} is reserved for the rainy photo itself; rename that candidate")
        for rel in self._superseded:
            (self.store / rel).unlink(missing_ok=True)
        # Work on copies: an update that raises leaves the bank as it was (its new files are overwritten alike
        # when the update is run again).
        number = self.updates + 1
        labels, excluded = dict(self.labels), dict(self.excluded)
        superseded: list[str] = []
        replaced: Counter[str] = Counter()
        sums: dict[str, dict[str, list[float]]] = {c: {} for c in candidates}
        newly_excluded: list[str] = []
        ranked = 0
        names = [n for n in self.files if n not in self.excluded]
        for name in tqdm(names, desc="pseudo-labels", unit="img", disable=not progress):
            x = read_image(self.files[name])
            current = labels.get(name)
            if current is None:
                current, why = self._initial(name, x, epoch)
                if current is None:
                    excluded[name] = why
                    newly_excluded.append(name)
                    continue
                labels[name] = current
            keys = [k for k in self.metrics if k in current.scores]
            pool: list[tuple[str, dict[str, float], torch.Tensor | None]] = [(current.source, current.scores, None)]
            for cand, teacher in candidates.items():
                y = teacher(x)
                if y.shape != x.shape:
                    raise ValueError(
                        f"candidate {cand!r} turned photo {name!r} of shape {tuple(x.shape)} into {tuple(y.shape)}"
                    )
                y = quantize_8bit(y.detach().to("cpu", torch.float32), "round")  # what the PNG label holds
                scores, failed = self._score(y, keys)
                if failed:
                    why = "; ".join(f"{k}: {v}" for k, v in failed.items())
                    warnings.warn(
                        PseudoLabelWarning(f"photo {name!r}: candidate {cand!r} cannot be scored ({why})"), stacklevel=2
                    )
                    continue
                for k, v in scores.items():
                    sums[cand].setdefault(k, []).append(v)
                pool.append((cand, scores, y))
            ranked += 1
            table = [[scores[k] for k in keys] for _, scores, _ in pool]
            best = rank_order(table, [self.metrics[k].spec.higher_is_better for k in keys])[0]
            if best == 0:
                continue
            cand, scores, label = pool[best]
            assert label is not None
            rel = f"{_LABEL_DIR}/{name}-u{number:04d}.png"
            write_image(label, self.store / rel)
            if current.file is not None:
                superseded.append(current.file)
            labels[name] = PseudoLabel(cand, int(epoch), dict(scores), rel)
            replaced[cand] += 1
        self.labels, self.excluded, self.updates, self._superseded = labels, excluded, number, superseded
        self._write_state()
        label_means: dict[str, float] = {}
        for k in self.metrics:
            values = [lab.scores[k] for lab in self.labels.values() if k in lab.scores]
            if values:
                label_means[k] = sum(values) / len(values)
        candidate_means = {c: {k: sum(v) / len(v) for k, v in per.items()} for c, per in sums.items()}
        replaced_by = {c: replaced[c] for c in candidates if replaced[c]}
        kept = ranked - sum(replaced.values())
        return UpdateSummary(int(epoch), ranked, replaced_by, kept, label_means, candidate_means, newly_excluded)

    def _write_state(self) -> None:
        with atomic_write(self.store / _STATE_FILE) as tmp:
            tmp.write_text(json.dumps(self.state_dict(), indent=1), encoding="utf-8")

    def state_dict(self) -> dict[str, Any]:
        """The bank's state in plain Python types (JSON- and ``torch.load(weights_only=True)``-safe): metrics,
        photo names, update count, labels (source, epoch, scores, file), excluded photos and files pending
        deletion. The label files stay in the store folder."""
        return {
            "version": _STATE_VERSION,
            "metrics": list(self.metrics),
            "names": self.names,
            "updates": self.updates,
            "labels": {
                n: {"source": lab.source, "epoch": lab.epoch, "scores": dict(lab.scores), "file": lab.file}
                for n, lab in self.labels.items()
            },
            "excluded": dict(self.excluded),
            "superseded": list(self._superseded),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a bank over the same photos, metrics and store.

        Raises:
            ValueError: another version, other metrics or photos, or a label file missing from the store (the
                message says which).
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"pseudo-label state: version {state.get('version')!r}, expected {_STATE_VERSION}")
        if list(state["metrics"]) != list(self.metrics):
            raise ValueError(
                f"pseudo-label state: ranked by {list(state['metrics'])}, this bank by {list(self.metrics)}"
            )
        names = list(state["names"])
        if names != self.names:
            missing, extra = sorted(set(names) - set(self.names)), sorted(set(self.names) - set(names))
            raise ValueError(
                "pseudo-label state: other photos than this bank's"
                + (f"; not in this bank: {', '.join(missing)}" if missing else "")
                + (f"; new here: {', '.join(extra)}" if extra else "")
                + ("" if missing or extra else " (another order)")
            )
        labels = {
            str(n): PseudoLabel(
                str(d["source"]),
                int(d["epoch"]),
                {str(k): float(v) for k, v in d["scores"].items()},
                None if d["file"] is None else str(d["file"]),
            )
            for n, d in state["labels"].items()
        }
        lost = [lab.file for lab in labels.values() if lab.file is not None and not (self.store / lab.file).is_file()]
        if lost:
            raise ValueError(
                f"pseudo-label state: {len(lost)} label file(s) missing from {self.store} (e.g. {lost[0]}); "
                "the store was changed or is not the one this state was saved with"
            )
        self.labels = labels
        self.updates = int(state["updates"])
        self.excluded = {str(k): str(v) for k, v in state["excluded"].items()}
        self._superseded = [str(s) for s in state["superseded"]]

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        where = str(self.root) if self.root is not None else f"{len(self)} files"
        labelled = f"{len(self.labelled())}/{len(self)}"
        return f"{type(self).__name__}({where!r}, labelled={labelled}, store={str(self.store)!r})"


def _resolve_metrics(metrics: Sequence[str | ImageMetric]) -> dict[str, ImageMetric]:
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics:
        raise ValueError("the pseudo-label bank needs at least one metric")
    out: dict[str, ImageMetric] = {}
    for m in metrics:
        if isinstance(m, str):
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; available: {', '.join(METRICS)}")
            m = METRICS[m]
        if m.paired:
            raise ValueError(f"metric {m.spec.key!r} needs a clean reference; real photos have none")
        if m.spec.key in out:
            raise ValueError(f"metric {m.spec.key!r} given twice")
        out[m.spec.key] = m
    return out


# ---------------------------------------------------------------------------------------------------- training


class PseudoPairs(Dataset):
    """Random ``patch`` x ``patch`` (rainy, pseudo-label) pairs of a bank's labelled photos.

    The photos are those :meth:`PseudoLabelBank.labelled` lists when the dataset is made (make a new one after
    each update). Item ``i`` in epoch ``e`` is two float32 tensors (3, patch, patch) in [0, 1], cropped and
    flipped alike by :func:`~sapnet.training.data.random_patch` with a generator seeded from ``(seed, e, i)``
    (call :meth:`set_epoch`).

    Raises:
        DatasetError: no labelled photo yet, or a photo smaller than the patch.
    """

    def __init__(
        self, bank: PseudoLabelBank, patch: int = 100, *, hflip: bool = True, vflip: bool = False, seed: int = 0
    ) -> None:
        self.patch, self.hflip, self.vflip, self.seed = int(patch), hflip, vflip, int(seed)
        self.epoch = 0
        self.items = [(bank.files[n], bank.label_path(n)) for n in bank.labelled()]
        if not self.items:
            raise DatasetError("PseudoPairs: no photo of the bank has a pseudo-label yet (run an update first)")
        for name in bank.labelled():
            w, h = bank.sizes[name]
            if w < self.patch or h < self.patch:
                raise DatasetError(
                    f"{bank.files[name]}: image is {w}x{h} (WxH), smaller than the {self.patch}x{self.patch} patch"
                )

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s crops."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rainy_path, label_path = self.items[index]
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0] >> 1)
        g = torch.Generator().manual_seed(seed)
        rainy, label = random_patch(
            (read_image(rainy_path), read_image(label_path)), self.patch, g, hflip=self.hflip, vflip=self.vflip
        )
        return rainy, label


def pseudo_label_loss(
    output: torch.Tensor, label: torch.Tensor, *, ssim_weight: float = 1.0, l1_weight: float = 1.0
) -> torch.Tensor:
    """``ssim_weight * (1 - SSIM) + l1_weight * L1`` of ``output`` against the pseudo-label.

    Args:
        output: (N, 3, H, W) float, the network's restoration (gradients flow to it); H, W >= 11.
        label: (N, 3, H, W) float in [0, 1], the pseudo-labels (no gradient needed).

    Returns:
        A 0-d tensor (SSIM from :func:`sapnet.losses.ssim_loss`, L1 the mean absolute difference).
    """
    label = label.detach()
    return ssim_weight * ssim_loss(output, label) + l1_weight * F.l1_loss(output, label)


class PseudoLabelLoss(nn.Module):
    """Module form of :func:`pseudo_label_loss`: ``forward(output, label)`` -> 0-d loss. No parameters."""

    def __init__(self, ssim_weight: float = 1.0, l1_weight: float = 1.0) -> None:
        super().__init__()
        self.ssim_weight, self.l1_weight = float(ssim_weight), float(l1_weight)

    def forward(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return pseudo_label_loss(output, label, ssim_weight=self.ssim_weight, l1_weight=self.l1_weight)

    def extra_repr(self) -> str:
        return f"ssim_weight={self.ssim_weight}, l1_weight={self.l1_weight}"
