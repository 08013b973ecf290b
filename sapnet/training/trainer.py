"""The SAPNet / PReNet training loop: single process or ``torchrun`` (DistributedDataParallel), resumable.

Outputs in ``run.out``: ``log.csv`` (step, epoch, lr, loss terms, images/s), ``val.csv`` (epoch, step, PSNR, SSIM),
``curves.png``, ``last.pt`` and ``best.pt`` (best validation PSNR). The checkpoints are in sapnet's format (read
by :func:`sapnet.load_model`) plus a ``"training"`` entry with the optimiser, scheduler, scaler and RNG states;
every value is a tensor, number, string, list or dict, so ``torch.load(..., weights_only=True)`` reads them.
They are written atomically: a crash while saving leaves the previous file intact.

Mixed precision (``run.amp`` ``"bf16"`` / ``"fp16"``) is CUDA only; asking for it on the CPU is a
:class:`~sapnet.training.config.ConfigError` rather than a silent fallback, so a config never means different
things on different machines without notice.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sapnet.data import PairedImageDataset, demo_dataset
from sapnet.data.image import quantize_8bit
from sapnet.metrics import psnr, ssim
from sapnet.models import CheckpointError
from sapnet.models.checkpoint import FORMAT, FORMAT_VERSION, atomic_save
from sapnet.training.config import ConfigError, TrainConfig
from sapnet.training.data import PatchDataset, ResumableSampler
from sapnet.training.logging import CsvLog, plot_curves

__all__ = ["DivergedError", "TrainResult", "Trainer", "build_loss", "get_rng_state", "set_rng_state"]


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the step it happened at was not applied and nothing was saved."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: steps and epochs reached, best validation PSNR (dB), files written."""

    step: int
    epoch: int
    best_psnr: float | None
    last: Path | None
    best: Path | None


# --- helpers ------------------------------------------------------------------------------------------------


def build_loss(config: TrainConfig) -> torch.nn.Module:
    """The :class:`sapnet.losses.SAPNetLoss` described by ``config.loss`` (seeded with ``config.run.seed``).

    Raises:
        sapnet.losses.BackboneUnavailableError: ``backbones="imagenet"`` and the pretrained weights are missing.
    """
    from sapnet.losses import LossWeights, SAPNetLoss

    c = config.loss
    weights = LossWeights(ssim=c.ssim, ubs=c.ubs, contrastive=c.contrastive, lpips=c.lpips)
    kwargs: dict[str, Any] = {
        "backbones": c.backbones,
        "seg_arch": c.seg_arch,
        "seg_encoder": c.seg_encoder,
        "lpips_net": c.lpips_net,
        "weight_files": c.weight_files,
        "seed": config.run.seed,
    }
    if "ubs_start_epoch" in inspect.signature(SAPNetLoss).parameters:
        kwargs["ubs_start_epoch"] = c.ubs_start_epoch
    elif c.ubs_start_epoch and c.ubs:
        warnings.warn("this SAPNetLoss has no ubs_start_epoch: the UBS term is used from epoch 0", stacklevel=2)
    return SAPNetLoss(weights, **kwargs)


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (CPU and all CUDA devices) RNG states, as tensors / lists / numbers only."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002 (the legacy global state is what we save)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "state": [int(v) for v in py_internal], "gauss_next": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state` (CUDA states are restored when as many devices are present)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def _plain(value: Any) -> Any:
    """``value`` with anything not weights_only-safe turned into strings (for ``backbones_info``)."""
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _worker_init(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from its torch seed (the crops themselves use
    per-item generators and need none of this)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (libraries may use the legacy global generator)
    random.seed(seed)


# --- the trainer --------------------------------------------------------------------------------------------


class Trainer:
    """Train a :class:`~sapnet.models.DerainNet` as ``config`` says.

    Args:
        config: the run (validated here).
        resume: a checkpoint written by a previous run (``last.pt``) to continue from: weights, optimiser,
            scheduler, scaler, RNG states, epoch and step are restored and the same trajectory continues (the same
            batches, crops and updates as an uninterrupted run). ``None``: start afresh.
        log: receives human-readable messages (rank 0 only).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) a process group is set up (NCCL on CUDA, Gloo on the CPU), the model is
    wrapped in DistributedDataParallel, each process reads its shard of every epoch and ``batch_size`` patches per
    step, and only rank 0 logs, validates and saves.

    Raises:
        ConfigError: invalid config, AMP asked for on the CPU, or a ``resume`` file of another network.
        sapnet.data.DatasetError: unusable training / validation folder or too-small images.
        sapnet.losses.BackboneUnavailableError: pretrained loss networks not available.
        sapnet.CheckpointError: unreadable ``resume`` file.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | os.PathLike[str] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        config.validate()
        self.config = config
        self.out = Path(config.run.out)
        self._own_group = False
        self.world, self.rank, local_rank = 1, 0, 0
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.world, self.rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0
        self._log = log
        self.device = self._pick_device(config.run.device, local_rank)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self._own_group = True
        amp = config.run.amp
        if amp != "none" and self.device.type != "cuda":
            raise ConfigError(f"run.amp={amp!r} needs a CUDA device (device is {self.device}); use --amp none")
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("run.amp='bf16' is not supported by this GPU; use --amp fp16 or none")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

        # The loss first: a missing pretrained backbone should fail before any data work.
        torch.manual_seed(config.run.seed)
        self.loss_fn = build_loss(config).to(self.device)
        self.backbones_info = _plain(getattr(self.loss_fn, "backbones_info", {}))

        torch.manual_seed(config.run.seed)
        net = config.model.build().to(self.device)
        if config.run.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.model: torch.nn.Module = net
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(net, device_ids=ids)
        o = config.optim
        self.optimizer = torch.optim.Adam(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = (
            torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(o.milestones), gamma=o.gamma)
            if o.lr_decay
            else None
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")

        self._setup_data()
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_psnr: float | None = None
        self.last_val: dict[str, float] | None = None
        if resume is not None:
            self._resume(Path(resume))
        self._train_log: CsvLog | None = None
        terms = [t for t in ("ssim", "ubs", "contrastive", "lpips") if getattr(config.loss, t) > 0]
        self._loss_columns = ["loss", *terms]

    # -- setup --

    @staticmethod
    def _pick_device(name: str | None, local_rank: int) -> torch.device:
        if name is None:
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(name)
        except RuntimeError as e:
            raise ConfigError(f"run.device: {e}") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"run.device={name!r} but CUDA is not available; use --device cpu")
            if device.index is None:
                device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        return device

    def info(self, message: str) -> None:
        """Log ``message`` on rank 0."""
        if self.is_main:
            self._log(message)

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _setup_data(self) -> None:
        d, r = self.config.data, self.config.run
        train, val = d.train, d.val
        if train is None:
            if self.is_main:
                root = demo_dataset()
            self._barrier()
            root = demo_dataset()
            train = str(root / "train")
            val = val if val is not None else str(root / "test")
            self.info(
                f"note: no training data given (--data): using the small embedded demo set in {root} "
                "(synthetic rain on procedural images, 24 train / 8 val pairs). It is NOT Rain100H; results are "
                "not comparable with published ones."
            )
        self.train_set = PatchDataset(train, d.patch, hflip=d.hflip, vflip=d.vflip, seed=r.seed, layout=d.layout)
        self.val_set = PairedImageDataset(val, layout=d.layout) if val is not None else None
        self.sampler = ResumableSampler(self.train_set, num_replicas=self.world, rank=self.rank, seed=r.seed)
        self.steps_per_epoch = self.sampler.num_samples // d.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"{train}: {len(self.train_set)} training pairs give less than one batch of {d.batch_size} "
                f"per process ({self.world} process(es)); lower --batch-size or add data"
            )
        self.loader = DataLoader(
            self.train_set,
            batch_size=d.batch_size,
            sampler=self.sampler,
            num_workers=d.workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if d.workers else None,
            generator=torch.Generator().manual_seed(r.seed),
            persistent_workers=False,
        )
        self.info(
            f"training on {len(self.train_set)} pairs from {train} ({self.steps_per_epoch} steps/epoch, "
            f"batch {d.batch_size} x {self.world} process(es)); validation: {val or 'none'}"
        )

    # -- checkpoints --

    def checkpoint_payload(self) -> dict[str, Any]:
        """The dict saved as ``last.pt`` / ``best.pt`` (see the module docstring)."""
        sched = None
        if self.scheduler is not None:
            sched = dict(self.scheduler.state_dict())
            sched["milestones"] = {int(k): int(v) for k, v in sched["milestones"].items()}
        metadata = {
            "epoch": self.epoch,
            "step": self.step,
            "best_psnr": self.best_psnr,
            "val": self.last_val,
            "train_config": self.config.to_dict(),
            "backbones_info": self.backbones_info,
        }
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.net.config.to_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
            "metadata": metadata,
            "training": {
                "epoch": self.epoch,
                "step": self.step,
                "batch_in_epoch": self.batch_in_epoch,
                "best_psnr": self.best_psnr,
                "world_size": self.world,
                "optimizer": _to_cpu(self.optimizer.state_dict()),
                "scheduler": sched,
                "scaler": self.scaler.state_dict(),
                "rng": get_rng_state(),
            },
        }

    def save(self, name: str = "last.pt") -> Path | None:
        """Write ``run.out/name`` atomically (rank 0 only; returns ``None`` on other ranks)."""
        if not self.is_main:
            return None
        return atomic_save(self.checkpoint_payload(), self.out / name)

    def _resume(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"{path}: no checkpoint to resume from")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e})") from e
        if not isinstance(obj, dict) or obj.get("format") != FORMAT or "training" not in obj:
            raise CheckpointError(f"{path}: not a sapnet training checkpoint (no 'training' state to resume)")
        if obj["config"] != self.net.config.to_dict():
            raise ConfigError(
                f"{path}: the checkpoint is a different network ({obj['config']}) than the config asks for "
                f"({self.net.config.to_dict()})"
            )
        t = obj["training"]
        if t.get("world_size", 1) != self.world:
            self.info(f"warning: {path} was written by {t.get('world_size')} process(es), now {self.world}")
        self.net.load_state_dict(obj["state_dict"], strict=True)
        self.optimizer.load_state_dict(t["optimizer"])
        if self.scheduler is not None and t["scheduler"] is not None:
            self.scheduler.load_state_dict(t["scheduler"])
            self.scheduler.milestones = Counter(self.scheduler.milestones)
        if t.get("scaler"):
            self.scaler.load_state_dict(t["scaler"])
        set_rng_state(t["rng"])
        self.epoch, self.step, self.batch_in_epoch = int(t["epoch"]), int(t["step"]), int(t["batch_in_epoch"])
        self.best_psnr = t.get("best_psnr")
        self.last_val = obj.get("metadata", {}).get("val")
        self.info(f"resumed from {path}: epoch {self.epoch}, step {self.step}")

    # -- loop --

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.config.run.channels_last else x

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's remaining batches (skipping those a resumed run already trained on)."""
        self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch * self.config.data.batch_size)
        self.train_set.set_epoch(self.epoch)
        yield from self.loader

    def train_step(self, rainy: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
        """One optimiser step on a batch (N, 3, P, P) in [0, 1]; returns the loss and its unweighted terms.

        Raises:
            DivergedError: non-finite loss (on any process); the parameters are left untouched.
        """
        rainy, clean = self._to_device(rainy), self._to_device(clean)
        with self._autocast():
            out = self.model(rainy)
            total, terms = self.loss_fn(out.float(), clean, rainy, epoch=self.epoch)
        finite = torch.isfinite(total.detach()).to(torch.float32)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        values = {"loss": float(total.detach())} | {k: float(v) for k, v in terms.items()}
        if finite.item() < 1:
            shown = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
            raise DivergedError(
                f"non-finite loss at step {self.step + 1} (epoch {self.epoch}): {shown}; the step was not applied "
                f"and {self.out / 'last.pt'} keeps the last good state"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return values

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean per-image PSNR / SSIM (dB / [0, 1], Y channel, protocol defaults) of the quantised outputs on
        whole validation images; rank 0 only (``None`` elsewhere or without a validation set)."""
        if self.val_set is None or not self.is_main:
            return None
        self.net.eval()
        p, s = [], []
        try:
            for i in range(len(self.val_set)):
                item = self.val_set[i]
                x, y = self._to_device(item["rainy"][None]), item["clean"][None].to(self.device)
                with self._autocast():
                    out = self.net(x)
                out = quantize_8bit(out.float().contiguous(), "floor")  # truncated as the evaluation protocol
                p.append(float(psnr(out, y)[0]))
                s.append(float(ssim(out, y)[0]))
        finally:
            self.net.train()
        return {"psnr": sum(p) / len(p), "ssim": sum(s) / len(s)}

    def _log_row(self, values: dict[str, float], images_per_s: float) -> None:
        if not self.is_main:
            return
        if self._train_log is None:
            self._train_log = CsvLog(self.out / "log.csv", ["step", "epoch", "lr", *self._loss_columns, "images_per_s"])
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"step": self.step, "epoch": self.epoch, "lr": lr, **values, "images_per_s": images_per_s}
        self._train_log.write(row)

    def _validate_and_save(self, val_log: CsvLog | None) -> None:
        metrics = self.validate()
        if metrics is not None and val_log is not None:
            self.last_val = metrics
            val_log.write({"epoch": self.epoch, "step": self.step, **metrics})
            self.info(
                f"epoch {self.epoch} step {self.step}: val PSNR {metrics['psnr']:.3f} dB, SSIM {metrics['ssim']:.4f}"
            )
            if self.best_psnr is None or metrics["psnr"] > self.best_psnr:
                self.best_psnr = metrics["psnr"]
                self.save("best.pt")
        self.save("last.pt")
        if self.is_main:
            plot_curves(self.out / "log.csv", self.out / "val.csv", self.out / "curves.png", self._loss_columns)
        self._barrier()

    def fit(self) -> TrainResult:
        """Train until ``optim.epochs`` or ``run.max_steps``; validate every ``run.val_every`` epochs and at the end.

        Raises:
            DivergedError: a non-finite loss (``last.pt`` is not overwritten).
        """
        cfg = self.config
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        val_log = CsvLog(self.out / "val.csv", ["epoch", "step", "psnr", "ssim"]) if self.is_main else None
        max_steps = cfg.run.max_steps
        total = cfg.optim.epochs * self.steps_per_epoch
        if max_steps is not None:
            total = min(total, max_steps)
        bar = tqdm(
            total=total, initial=min(self.step, total), disable=not (self.is_main and cfg.run.progress), unit="step"
        )
        images_per_step = cfg.data.batch_size * self.world
        t_last, steps_since = time.perf_counter(), 0
        done_at = -1  # step at which the last validation + save happened
        try:
            self.model.train()
            while self.epoch < cfg.optim.epochs and (max_steps is None or self.step < max_steps):
                for rainy, clean in self._batches():
                    values = self.train_step(rainy, clean)
                    self.step += 1
                    self.batch_in_epoch += 1
                    steps_since += 1
                    now = time.perf_counter()
                    speed = images_per_step * steps_since / max(now - t_last, 1e-9)
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()} | {"img/s": f"{speed:.1f}"})
                    last = max_steps is not None and self.step >= max_steps
                    if self.step % cfg.run.log_every == 0 or last or self.batch_in_epoch == self.steps_per_epoch:
                        self._log_row(values, speed)
                        t_last, steps_since = now, 0
                    if cfg.run.save_every is not None and self.step % cfg.run.save_every == 0:
                        self.save("last.pt")
                    if last:
                        break
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if self.scheduler is not None:
                        self.scheduler.step()
                    if self.epoch % cfg.run.val_every == 0 or self.epoch == cfg.optim.epochs:
                        self._validate_and_save(val_log)
                        done_at = self.step
                    else:
                        self.save("last.pt")
            if done_at != self.step:
                self._validate_and_save(val_log)
        finally:
            bar.close()
            if self._own_group and dist.is_initialized():
                dist.destroy_process_group()
                self._own_group = False
        best = self.out / "best.pt"
        return TrainResult(
            self.step,
            self.epoch,
            self.best_psnr,
            self.out / "last.pt" if self.is_main else None,
            best if self.is_main and best.is_file() else None,
        )
