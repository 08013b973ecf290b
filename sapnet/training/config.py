"""Training configuration: typed dataclasses, YAML files with ``base:`` inheritance, and dotted overrides.

A YAML file holds any subset of the sections below (``model``, ``data``, ``optim``, ``loss``, ``run``); the rest
keeps its default. ``base: other.yaml`` (relative to the file) is read first and the file's own keys are merged
over it, section by section. Unknown keys are an error naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import yaml

from sapnet.data.synthesis import UnknownPresetError, rain_preset
from sapnet.losses.backbones import BackboneMode
from sapnet.losses.combined import LossWeights, SAPNetLoss, check_loss_options
from sapnet.metrics import METRICS
from sapnet.models import CheckpointError, DerainNet, DerainNetConfig, create_model

__all__ = [
    "RESUME_FREE_KEYS",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RealConfig",
    "RunConfig",
    "TrainConfig",
    "available_cpus",
]


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value, unreadable YAML."""


@dataclass
class ModelConfig:
    """The network: a registry name plus optional overrides (``None`` keeps the preset's value).

    Attributes:
        preset: a registry architecture (``sapnet.list_models()``: ``"sapnet"`` with dilations 1..16 + attention,
            ``"prenet"``, ``"prn"``, ...) or ``arch.tag`` (``sapnet.list_models(pretrained=True)``).
        pretrained: start from the published weights of ``preset`` (fine-tuning), fetched like
            ``sapnet.create_model(preset, pretrained=True)``; ``False``: freshly initialised.
        stages: recurrent stages T (papers: 6).
        channels: feature channels (papers: 32).
        dilations: one rate per residual block (its length is the number of blocks).
        attention: channel residual attention (CRA) in the residual blocks.
        recurrent: ``"lstm"`` (papers), ``"gru"`` or ``"none"``.
    """

    preset: str = "sapnet"
    pretrained: bool = False
    stages: int | None = None
    channels: int | None = None
    dilations: list[int] | None = None
    attention: bool | None = None
    recurrent: str | None = None

    def _overrides(self) -> dict[str, Any]:
        names = [f.name for f in fields(self) if f.name not in ("preset", "pretrained")]
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def network_config(self) -> DerainNetConfig:
        """The :class:`~sapnet.models.DerainNetConfig` this describes (raises :class:`ConfigError` if invalid)."""
        try:
            return create_model(self.preset, **self._overrides()).config
        except (KeyError, ValueError) as e:
            raise ConfigError(f"model: {e.args[0] if isinstance(e, KeyError) else e}") from None

    def build(self) -> DerainNet:
        """The network to train (train mode, CPU): fresh, or with ``pretrained`` the published weights.

        Raises:
            ConfigError: unknown name, bad override, weights that cannot be had or do not fit the overrides.
        """
        try:
            return create_model(self.preset, pretrained=self.pretrained, **self._overrides()).train()
        except (KeyError, ValueError, CheckpointError) as e:
            raise ConfigError(f"model: {e.args[0] if isinstance(e, KeyError) else e}") from None


@dataclass
class DataConfig:
    """Training / validation data.

    Attributes:
        train: paired training folder in any layout of :func:`sapnet.data.find_pairs` (e.g. ``data/RainTrainH``);
            ``None``: the small embedded demo set (:func:`sapnet.data.demo_dataset`, ``train/``).
        val: paired validation folder (e.g. ``data/Rain100H``); ``None``: the demo set's ``test/`` when ``train``
            is also ``None``, else no validation.
        patch: side of the random square training crops in pixels (papers: 100).
        batch_size: patches per step and per process (papers: 12).
        workers: DataLoader worker processes (0: load in the main process); ``None``: what fits the machine,
            ``min(4, CPUs - 1)`` (see :meth:`loader_workers`). They do not change the batches.
        hflip: random horizontal flips.
        vflip: random vertical flips (off in the papers).
        layout: force a layout of :data:`sapnet.data.LAYOUTS` (``None``: detect).
        clean: a folder of clean photos to render rain on, on the fly, instead of paired ``train`` data (e.g.
            ``../shared/data/clean_corpus/bsds300_train209``; never the Rain100L / Rain100H test backgrounds):
            :class:`~sapnet.training.data.SyntheticRainPatches`.
        rain_presets: with ``clean``: the :data:`sapnet.data.RAIN_PRESETS` each patch's rain is drawn from.
        samples_per_epoch: with ``clean``: patches per epoch (``None``: one per clean photo).
    """

    train: str | None = None
    val: str | None = None
    patch: int = 100
    batch_size: int = 12
    workers: int | None = None
    hflip: bool = True
    vflip: bool = False
    layout: str | None = None
    clean: str | None = None
    rain_presets: list[str] = field(default_factory=lambda: ["light", "medium", "heavy"])
    samples_per_epoch: int | None = None

    def loader_workers(self) -> int:
        """``workers``, or when it is ``None`` ``min(4, CPUs available - 1)`` (0 on a single core)."""
        return self.workers if self.workers is not None else min(4, max(0, available_cpus() - 1))


@dataclass
class OptimConfig:
    """Adam and the step schedule.

    Attributes:
        lr: Adam learning rate. 1e-3 is what the reference SAPNet / PReNet code uses; the SAPNet slides say 1e-4.
        milestones: epochs after which the LR is multiplied by ``gamma`` (papers: 30, 50, 80).
        gamma: LR decay factor (papers: 0.2).
        lr_decay: use the MultiStepLR schedule at all (off in the ablations M1-M4).
        epochs: training epochs (papers: 100).
        grad_clip: max global gradient norm, ``None``: no clipping.
        weight_decay: Adam weight decay (papers: 0).
        ema: decay of an exponential moving average of the weights, updated after every step (e.g. 0.999);
            when set, validation and ``best.pt``'s weights use the average (``last.pt`` keeps the trained weights
            and the average in its training state). ``None``: no average.
    """

    lr: float = 1e-3
    milestones: list[int] = field(default_factory=lambda: [30, 50, 80])
    gamma: float = 0.2
    lr_decay: bool = True
    epochs: int = 100
    grad_clip: float | None = None
    weight_decay: float = 0.0
    ema: float | None = None


@dataclass
class LossConfig:
    """Weights and networks of :class:`sapnet.losses.SAPNetLoss` (a weight of 0 disables a term).

    Attributes:
        ssim: negative-SSIM reconstruction term (papers: 1).
        ubs: unsupervised background segmentation term (papers: 0.1).
        contrastive: perceptual contrastive term (papers: 0.1).
        lpips: LPIPS term (papers: 0.1).
        ubs_start_epoch: first epoch in which the UBS term is used.
        backbones: ``"imagenet"`` (pretrained, needs the weights) or ``"random"`` (smoke tests only).
        seg_arch: segmentation architecture of the UBS term.
        seg_encoder: encoder of the segmentation network (paper: ``"resnet101"``).
        lpips_net: LPIPS backbone (``"vgg"``).
        weight_files: backbone name -> local weight file, for offline machines.
    """

    ssim: float = 1.0
    ubs: float = 0.1
    contrastive: float = 0.1
    lpips: float = 0.1
    ubs_start_epoch: int = 0
    backbones: str = "imagenet"
    seg_arch: str = "FPN"
    seg_encoder: str = "resnet101"
    lpips_net: str = "vgg"
    weight_files: dict[str, str] | None = None

    def term_weights(self) -> LossWeights:
        """The four weights as :class:`sapnet.losses.LossWeights` (raises :class:`ConfigError` if one is < 0)."""
        try:
            return LossWeights(ssim=self.ssim, ubs=self.ubs, contrastive=self.contrastive, lpips=self.lpips)
        except ValueError as e:
            raise ConfigError(f"loss: {e}") from None

    def check(self) -> None:
        """Raise :class:`ConfigError` for values :class:`sapnet.losses.SAPNetLoss` refuses (nothing is built)."""
        try:
            check_loss_options(self.term_weights(), self.backbones, self.weight_files, self.ubs_start_epoch)
        except ValueError as e:
            raise ConfigError(f"loss: {e}") from None

    def build(self, seed: int = 0) -> SAPNetLoss:
        """The :class:`sapnet.losses.SAPNetLoss` this describes, its random initialisations seeded by ``seed``.

        Raises:
            ConfigError: a value the loss refuses.
            sapnet.losses.BackboneUnavailableError: ``backbones="imagenet"`` and the pretrained weights are missing.
        """
        self.check()
        try:
            return SAPNetLoss(
                self.term_weights(),
                backbones=cast(BackboneMode, self.backbones),  # checked above
                seg_arch=self.seg_arch,
                seg_encoder=self.seg_encoder,
                lpips_net=self.lpips_net,
                weight_files=self.weight_files,
                seed=seed,
                ubs_start_epoch=self.ubs_start_epoch,
            )
        except ValueError as e:
            raise ConfigError(f"loss: {e}") from None


@dataclass
class RealConfig:
    """Adaptation to real rainy photos without ground truth (off while ``photos`` is ``None``): a
    :class:`~sapnet.training.PseudoLabelBank` of pseudo-labels ranked by no-reference IQA, a real batch beside
    every synthetic one, and ``best.pt`` chosen on held-out real photos (see :mod:`sapnet.training.adapt`).

    Attributes:
        photos: the folder of real rainy photos (e.g. ``../shared/data/SIRR_real/rain``).
        images: a name list (:func:`sapnet.data.read_name_list`) of the photos to adapt on (``None``: all but
            ``heldout``'s), e.g. ``datasets/splits/sirr_real_train.txt``.
        heldout: a name list of photos never trained on, scored after every validation to choose ``best.pt``
            (``None``: ``best.pt`` follows the paired validation PSNR, if any), e.g.
            ``datasets/splits/sirr_real_select.txt``; keep evaluation photos out of it.
        teachers: registry checkpoints (or checkpoint paths) whose restorations are candidates at the first
            update (they do not change, so later updates rank only the student's).
        student: the network being trained is a candidate at every update.
        flip: each candidate also with its horizontal-flip average.
        keep: thresholds in (0, 1): each candidate also with the rainy photo's own pixels kept wherever it
            changed no channel by more than the threshold (:func:`~sapnet.models.keep_unchanged`).
        metrics: the no-reference metrics ranking the candidates (mean rank; the first breaks ties).
        select_metrics: the metrics of the held-out score (mean over them of model / rainy-input means; lower is
            better); ``None``: ``metrics``.
        batch_size: real patches per step, in the same forward pass as the synthetic batch.
        update_every: update the pseudo-labels every this many epochs (at the start of epoch 0, k, 2k, ...).
        max_side: photos with a longer side are downscaled (area) to it for adaptation and held-out scoring.
        pseudo: weight of the pseudo-label loss (SSIM + L1 against the labels) on the real patches.
        pseudo_l1: weight of its L1 part (its SSIM part weighs 1).
        ubs: weight of SAPNet's unsupervised segmentation term on the real outputs (needs its network, as
            ``loss.ubs``: ``loss.backbones`` / ``loss.weight_files``).
        contrastive: weight of the perceptual contrastive term on the real outputs (label positive, rainy photo
            negative; VGG-16 as ``loss.contrastive``).
        tile: tile side for the full-photo passes (updates, held-out scoring); ``None``: whole photos.
    """

    photos: str | None = None
    images: str | None = None
    heldout: str | None = None
    teachers: list[str] = field(default_factory=list)
    student: bool = True
    flip: bool = True
    keep: list[float] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["brisque", "niqe"])
    select_metrics: list[str] | None = None
    batch_size: int = 4
    update_every: int = 1
    max_side: int | None = 1024
    pseudo: float = 1.0
    pseudo_l1: float = 1.0
    ubs: float = 0.0
    contrastive: float = 0.0
    tile: int | None = None

    @property
    def enabled(self) -> bool:
        return self.photos is not None


@dataclass
class RunConfig:
    """Where and how the run happens.

    Attributes:
        out: output folder (``log.csv``, ``val.csv``, ``curves.png``, ``last.pt``, ``best.pt``).
        seed: seeds model init, loss networks, sampling order and crops.
        max_steps: stop after this many optimiser steps in all (``None``: run all epochs).
        val_every: validate every this many epochs (and always at the end).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` (mixed precision; CUDA only, an error on the CPU).
        channels_last: use the channels-last memory format for the model and its inputs.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``; ``None``: CUDA if available, else the CPU.
        log_every: write a ``log.csv`` row every this many steps (and at the last step).
        save_every: also write ``last.pt`` every this many steps (``None``: at epoch ends and the end only).
        progress: show a tqdm progress bar (rank 0 only).
        tensorboard: also write the ``log.csv`` / ``val.csv`` values as TensorBoard events in ``out/tensorboard``
            (needs the ``tensorboard`` package).
    """

    out: str = "runs/sapnet"
    seed: int = 0
    max_steps: int | None = None
    val_every: int = 1
    amp: str = "none"
    channels_last: bool = True
    device: str | None = None
    log_every: int = 10
    save_every: int | None = None
    progress: bool = True
    tensorboard: bool = False


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "real": RealConfig,
    "run": RunConfig,
}

RESUME_FREE_KEYS = frozenset(
    {
        "data.workers",
        "optim.epochs",
        "run.out",
        "run.max_steps",
        "run.val_every",
        "run.device",
        "run.log_every",
        "run.save_every",
        "run.progress",
        "run.tensorboard",
    }
)
"""Keys that may differ between a run and the run it resumes: limits, logging, outputs, where it runs. Any other
difference would not continue the same trajectory (see :meth:`TrainConfig.resume_differences`)."""


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults are the SAPNet paper's Rain100H setting (on the demo data).

    Build it with :meth:`from_yaml`, :meth:`from_dict` or directly; change it with :meth:`set` and check it with
    :meth:`validate`.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    real: RealConfig = field(default_factory=RealConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML / JSON / ``weights_only`` safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a nested dict; unknown sections or keys raise :class:`ConfigError` naming ``source``."""
        cfg = cls()
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(d).__name__}")
        for section, values in d.items():
            if section not in _SECTIONS:
                raise ConfigError(f"{source}: unknown key {section!r}; known sections: {', '.join(_SECTIONS)}")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value, source=source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a YAML file (following ``base:`` links); see the module docstring."""
        return cls.from_dict(_read_yaml(Path(path), ()), source=str(path))

    def set(self, key: str, value: Any, source: str = "override") -> None:
        """Set ``"section.name"`` to ``value`` after a type check; :class:`ConfigError` on unknown keys."""
        section, _, name = key.partition(".")
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown key {key!r}; known sections: {', '.join(_SECTIONS)}")
        obj = getattr(self, section)
        known = {f.name: f for f in fields(obj)}
        if name not in known:
            raise ConfigError(f"{source}: unknown key {key!r}; known keys in {section!r}: {', '.join(known)}")
        setattr(obj, name, _check_type(key, value, known[name], source))

    def resume_differences(self, saved: TrainConfig) -> list[str]:
        """The keys outside :data:`RESUME_FREE_KEYS` in which this config differs from ``saved`` (the config of the
        run being resumed), each as ``"key: checkpoint <saved value>, now <this value>"``."""
        ours, theirs = _flat(self.to_dict()), _flat(saved.to_dict())
        return [
            f"{key}: checkpoint {theirs[key]!r}, now {ours[key]!r}"
            for key in ours
            if key not in RESUME_FREE_KEYS and ours[key] != theirs[key]
        ]

    def network_config(self) -> DerainNetConfig:
        """The model's :class:`~sapnet.models.DerainNetConfig`."""
        return self.model.network_config()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work (checked before anything is built)."""
        self.network_config()
        checks = [
            (self.data.patch >= 8, "data.patch must be >= 8"),
            (self.data.batch_size >= 1, "data.batch_size must be >= 1"),
            (self.data.workers is None or self.data.workers >= 0, "data.workers must be >= 0 or null"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (self.optim.epochs >= 1, "optim.epochs must be >= 1"),
            (self.optim.grad_clip is None or self.optim.grad_clip > 0, "optim.grad_clip must be > 0 or null"),
            (self.optim.ema is None or 0 < self.optim.ema < 1, "optim.ema must be in (0, 1) or null"),
            (self.run.max_steps is None or self.run.max_steps >= 1, "run.max_steps must be >= 1 or null"),
            (self.run.val_every >= 1, "run.val_every must be >= 1"),
            (self.run.log_every >= 1, "run.log_every must be >= 1"),
            (self.run.save_every is None or self.run.save_every >= 1, "run.save_every must be >= 1 or null"),
            (self.run.amp in ("none", "bf16", "fp16"), f"run.amp must be none, bf16 or fp16, not {self.run.amp!r}"),
            (self.data.clean is None or self.data.train is None, "data.clean and data.train exclude each other"),
            (len(self.data.rain_presets) >= 1, "data.rain_presets must name at least one preset"),
            (
                self.data.samples_per_epoch is None or self.data.samples_per_epoch >= 1,
                "data.samples_per_epoch must be >= 1",
            ),
            (self.real.batch_size >= 1, "real.batch_size must be >= 1"),
            (self.real.update_every >= 1, "real.update_every must be >= 1"),
            (
                self.real.max_side is None or self.real.max_side >= self.data.patch,
                "real.max_side must be >= data.patch",
            ),
            (len(self.real.metrics) >= 1, "real.metrics must name at least one metric"),
            (all(0 < t < 1 for t in self.real.keep), "real.keep thresholds must be in (0, 1)"),
            (self.real.student or bool(self.real.teachers), "real: no candidates (no teachers and student off)"),
            (
                min(self.real.pseudo, self.real.pseudo_l1, self.real.ubs, self.real.contrastive) >= 0,
                "real: weights must be >= 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for preset in self.data.rain_presets:
            try:
                rain_preset(preset)
            except UnknownPresetError as e:
                raise ConfigError(f"data.rain_presets: {e}") from None
        for key in ("metrics", "select_metrics"):
            for name in getattr(self.real, key) or []:
                metric = METRICS.get(name)
                if metric is None or metric.paired:
                    raise ConfigError(
                        f"real.{key}: {name!r} is not a no-reference metric; choose from "
                        + ", ".join(k for k, m in METRICS.items() if not m.paired)
                    )
        self.loss.check()


def _check_type(key: str, value: Any, f: dataclasses.Field[Any], source: str) -> Any:
    """Coerce / check ``value`` against the field's annotation (a string under ``from __future__``)."""
    ann = str(f.type)
    optional = "None" in ann
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be null")

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {what}, got {value!r}")

    if ann.startswith("bool"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if ann.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if ann.startswith("float"):
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if ann.startswith("str"):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if ann.startswith("list[str]"):
        if not isinstance(value, (list, tuple)) or any(not isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return [str(v) for v in value]
    if ann.startswith("list[int]"):
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise bad("a list of integers")
        return [int(v) for v in value]
    if ann.startswith("dict"):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {str(k): os.fspath(v) if isinstance(v, os.PathLike) else str(v) for k, v in value.items()}
    return value


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` of a :meth:`TrainConfig.to_dict` dict."""
    return {f"{section}.{key}": value for section, values in d.items() for key, value in values.items()}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in chain:
        raise ConfigError(f"{path}: circular 'base:' chain ({' -> '.join(map(str, chain))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    # Check keys here so that an error names the file that holds the bad key.
    TrainConfig.from_dict(data, source=str(path))
    if base is None:
        return data
    return _merge(_read_yaml(path.parent / str(base), (*chain, path.resolve())), data)
