"""The SAPNet / PReNet training loop: single process or ``torchrun`` (DistributedDataParallel), resumable.

Outputs in ``run.out``: ``log.csv`` (step, epoch, lr, loss terms, images/s), ``val.csv`` (epoch, step, PSNR, SSIM),
``curves.png``, ``last.pt`` and ``best.pt`` (best validation PSNR, or with real-photo adaptation the best held-out
score: :mod:`sapnet.training.adapt`, whose pseudo-labels go to ``pseudo_labels/``), and with ``run.tensorboard``
TensorBoard events in ``tensorboard/``. The checkpoints are written by :func:`sapnet.models.save_training_state`:
sapnet's format (read by :func:`sapnet.load_model`) plus a ``"training"`` entry with the counters, the optimiser,
scheduler, scaler, RNG (and EMA, pseudo-label) states, all ``weights_only``-safe. They are written atomically: a
crash while saving leaves the previous file intact. A new run refuses an output folder that is not empty unless told
to overwrite it; a resumed run must have the same config as the checkpoint's except for
:data:`~sapnet.training.config.RESUME_FREE_KEYS`, and its logs lose the rows written after that checkpoint.

Mixed precision (``run.amp`` ``"bf16"`` / ``"fp16"``) is CUDA only; asking for it on the CPU is a
:class:`~sapnet.training.config.ConfigError` rather than a silent fallback, so a config never means different
things on different machines without notice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sapnet.data.image import quantize_8bit
from sapnet.metrics import psnr, ssim
from sapnet.models import Checkpoint, load_weights, save_training_state
from sapnet.training.adapt import REAL_TERMS, RealAdaptation
from sapnet.training.config import ConfigError, TrainConfig
from sapnet.training.ema import WeightEMA
from sapnet.training.logging import CsvLog, TensorBoardLog, plot_curves, truncate_csv
from sapnet.training.outputs import check_out_dir, remove_outputs
from sapnet.training.setup import build_train_data, pick_device
from sapnet.training.state import (
    get_rng_state,
    load_optimisation_state,
    optimisation_state,
    read_resume_state,
    set_rng_state,
)

__all__ = ["DivergedError", "TrainResult", "Trainer"]


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the step it happened at was not applied and nothing was saved."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: steps and epochs reached, best validation PSNR (dB), files written, and with
    real-photo adaptation the best held-out score (:meth:`~sapnet.training.adapt.RealAdaptation.score_heldout`)."""

    step: int
    epoch: int
    best_psnr: float | None
    last: Path | None
    best: Path | None
    best_real_score: float | None = None


# --- the trainer --------------------------------------------------------------------------------------------


class Trainer:
    """Train a :class:`~sapnet.models.DerainNet` as ``config`` says.

    Args:
        config: the run (validated here).
        resume: a checkpoint written by a previous run (``last.pt``) to continue from: weights, optimiser,
            scheduler, scaler, EMA and RNG states, epoch and step are restored and the same trajectory continues
            (the same batches, crops and updates as an uninterrupted run); ``config`` must match the checkpoint's
            outside :data:`~sapnet.training.config.RESUME_FREE_KEYS`, and ``log.csv`` / ``val.csv`` rows after its
            step are dropped. ``None``: start afresh, in an empty or new ``run.out``.
        overwrite: start afresh even if ``run.out`` holds files: a previous run's outputs there are deleted when
            :meth:`fit` starts (and the deletion logged).
        log: receives human-readable messages (rank 0 only).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) a process group is set up (NCCL on CUDA, Gloo on the CPU), the model is
    wrapped in DistributedDataParallel, each process reads its shard of every epoch and ``batch_size`` patches per
    step, and only rank 0 logs, validates and saves.

    Raises:
        ConfigError: invalid config, AMP asked for on the CPU, a non-empty ``run.out`` without ``resume`` or
            ``overwrite``, a ``resume`` file of another run, or ``run.tensorboard`` without the package.
        sapnet.data.DatasetError: unusable training / validation folder or too-small images.
        sapnet.losses.BackboneUnavailableError: pretrained loss networks not available.
        sapnet.CheckpointError: unreadable ``resume`` file or weights that do not fit.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        config.validate()
        self.config = config
        self.out = Path(config.run.out)
        self._log = log
        resumed = read_resume_state(resume, config) if resume is not None else None
        if resumed is None:
            check_out_dir(self.out, overwrite=overwrite)
        self._overwrite = overwrite and resumed is None
        self._resumed = resumed is not None
        self._own_group = False
        self.world, self.rank, local_rank = 1, 0, 0
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.world, self.rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0
        self.device = pick_device(config.run.device, local_rank)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self._own_group = True
        amp = config.run.amp
        if amp != "none" and self.device.type != "cuda":
            raise ConfigError(f"run.amp={amp!r} needs a CUDA device (device is {self.device}); use --amp none")
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("run.amp='bf16' is not supported by this GPU; use --amp fp16 or none")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

        self._tensorboard: TensorBoardLog | None = None  # on every rank (the same error everywhere); rank 0 writes
        if config.run.tensorboard:
            step = int(resumed[1]["step"]) if resumed is not None else None
            try:
                self._tensorboard = TensorBoardLog(self.out / "tensorboard", purge_step=step)
            except ImportError as e:
                raise ConfigError(f"run.tensorboard: {e}") from None

        # The loss first: a missing pretrained backbone should fail before any data work.
        torch.manual_seed(config.run.seed)
        self.loss_fn = config.loss.build(seed=config.run.seed).to(self.device)

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
        self.ema = WeightEMA(net, o.ema) if o.ema is not None else None

        self.adapt: RealAdaptation | None = None
        if config.real.enabled:
            if self.world > 1:
                raise ConfigError("real-photo adaptation (real.photos) runs in one process, not under torchrun")
            self.adapt = RealAdaptation(config, self.out, self.device, self.info)
        data = build_train_data(config, self.world, self.rank, self.device, self.info, self._barrier)
        self.train_set, self.val_set, self.sampler, self.loader = data.train, data.val, data.sampler, data.loader
        self.steps_per_epoch = data.steps_per_epoch
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_psnr: float | None = None
        self.best_real: float | None = None
        self.last_val: dict[str, float] | None = None
        if resumed is not None:
            self._restore(*resumed)
        self._train_log: CsvLog | None = None
        terms = [t for t in ("ssim", "ubs", "contrastive", "lpips") if getattr(config.loss, t) > 0]
        if self.adapt is not None:
            r = config.real
            terms += [t for t, w in zip(REAL_TERMS, (r.pseudo, r.ubs, r.contrastive), strict=True) if w > 0]
        self._loss_columns = ["loss", *terms]
        self._val_columns = (["psnr", "ssim"] if self.val_set is not None else []) + (
            self.adapt.score_columns if self.adapt is not None else []
        )

    # -- setup --

    def info(self, message: str) -> None:
        """Log ``message`` on rank 0."""
        if self.is_main:
            self._log(message)

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # -- checkpoints --

    def training_state(self, *, trained_weights: bool = False) -> dict[str, Any]:
        """The ``"training"`` entry of the checkpoints: counters, optimiser / scheduler / scaler / RNG / EMA states,
        and with ``trained_weights`` the trained network's weights (for a file whose model weights are the EMA's)."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "best_psnr": self.best_psnr,
            "best_real": self.best_real,
            "world_size": self.world,
            **optimisation_state(self.optimizer, self.scheduler, self.scaler),
            "rng": get_rng_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.adapt is not None:
            state["real"] = self.adapt.state_dict()
        if trained_weights:
            state["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        return state

    def save(self, name: str = "last.pt", *, averaged: bool = False) -> Path | None:
        """Write ``run.out/name`` atomically (rank 0 only; returns ``None`` on other ranks). With ``averaged`` (and
        an EMA) the file's model weights are the EMA's and the trained ones go into its training state."""
        if not self.is_main:
            return None
        averaged = averaged and self.ema is not None
        metadata: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "best_psnr": self.best_psnr,
            "best_real": self.best_real,
            "val": self.last_val,
            "train_config": self.config.to_dict(),
            "backbones_info": self.loss_fn.backbones_info,
        }
        if self.ema is not None:
            metadata["weights"] = "ema" if averaged else "trained"
        model = self.ema.module if averaged and self.ema is not None else self.net
        return save_training_state(model, self.out / name, self.training_state(trained_weights=averaged), **metadata)

    def _restore(self, checkpoint: Checkpoint, t: dict[str, Any]) -> None:
        path = checkpoint.path
        if t.get("world_size", 1) != self.world:
            self.info(f"warning: {path} was written by {t.get('world_size')} process(es), now {self.world}")
        if "state_dict" in t:  # the file's model weights are an average; these are the trained ones
            checkpoint = dataclasses.replace(checkpoint, state_dict=dict(t["state_dict"]))
        load_weights(self.net, checkpoint)
        load_optimisation_state(t, self.optimizer, self.scheduler, self.scaler)
        if self.ema is not None:
            if "ema" in t:
                self.ema.load_state_dict(t["ema"])
            else:
                raise ConfigError(f"{path}: has no EMA state to continue optim.ema from")
        if self.adapt is not None:
            if "real" not in t:
                raise ConfigError(f"{path}: has no pseudo-label state to continue the real-photo adaptation from")
            try:
                self.adapt.load_state_dict(t["real"])
            except ValueError as e:
                raise ConfigError(f"{path}: {e}") from None
        set_rng_state(t["rng"])
        self.epoch, self.step, self.batch_in_epoch = int(t["epoch"]), int(t["step"]), int(t["batch_in_epoch"])
        self.best_psnr = t.get("best_psnr")
        self.best_real = t.get("best_real")
        self.last_val = checkpoint.metadata.get("val")
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

    def train_step(
        self, rainy: torch.Tensor, clean: torch.Tensor, real: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, float]:
        """One optimiser step on a batch (N, 3, P, P) in [0, 1]; returns the loss and its unweighted terms.

        ``real``: real rainy patches and their pseudo-labels (B, 3, P, P), run in the same forward pass and
        trained with :meth:`RealAdaptation.loss <sapnet.training.adapt.RealAdaptation.loss>`.

        Raises:
            DivergedError: non-finite loss (on any process); the parameters are left untouched.
        """
        rainy, clean = self._to_device(rainy), self._to_device(clean)
        n = rainy.shape[0]
        real_terms: dict[str, float] = {}
        with self._autocast():
            if real is None:
                out = self.model(rainy)
            else:
                real_rainy, label = self._to_device(real[0]), self._to_device(real[1])
                both = self.model(self._to_device(torch.cat([rainy, real_rainy])))
                out, real_out = both[:n], both[n:]
            total, terms = self.loss_fn(out.float(), clean, rainy, epoch=self.epoch)
            if real is not None:
                assert self.adapt is not None
                real_total, real_terms = self.adapt.loss(real_out.float(), label, real_rainy, epoch=self.epoch)
                total = total + real_total
        finite = torch.isfinite(total.detach()).to(torch.float32)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        values = {"loss": float(total.detach())} | {k: float(v) for k, v in terms.items()} | real_terms
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
        if self.ema is not None:
            self.ema.update(self.net)
        return values

    def eval_net(self) -> torch.nn.Module:
        """The weights validation, ``best.pt`` and pseudo-label updates use: the EMA's if ``optim.ema``, else the
        trained network."""
        return self.ema.module if self.ema is not None else self.net

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean per-image PSNR / SSIM (dB / [0, 1], Y channel, protocol defaults) of the quantised outputs on
        whole validation images, and with held-out real photos their scores
        (:meth:`~sapnet.training.adapt.RealAdaptation.score_heldout`), of :meth:`eval_net`; rank 0 only (``None``
        elsewhere or without validation data)."""
        if not self.is_main:
            return None
        real = self.adapt.score_heldout(self.eval_net()) if self.adapt is not None else None
        paired = self._validate_pairs()
        if real is None and paired is None:
            return None
        return (paired or {}) | (real or {})

    def _validate_pairs(self) -> dict[str, float] | None:
        if self.val_set is None:
            return None
        net = self.eval_net()
        net.eval()
        p, s = [], []
        try:
            for i in range(len(self.val_set)):
                item = self.val_set[i]
                x, y = self._to_device(item["rainy"][None]), item["clean"][None].to(self.device)
                with self._autocast():
                    out = net(x)
                out = quantize_8bit(out.float().contiguous(), "floor")  # truncated as the evaluation protocol
                p.append(float(psnr(out, y)[0]))
                s.append(float(ssim(out, y)[0]))
        finally:
            if self.ema is None:
                net.train()
        return {"psnr": sum(p) / len(p), "ssim": sum(s) / len(s)}

    def _log_row(self, values: dict[str, float], images_per_s: float) -> None:
        if not self.is_main:
            return
        if self._train_log is None:
            self._train_log = CsvLog(self.out / "log.csv", ["step", "epoch", "lr", *self._loss_columns, "images_per_s"])
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"step": self.step, "epoch": self.epoch, "lr": lr, **values, "images_per_s": images_per_s}
        self._train_log.write(row)
        if self._tensorboard is not None:
            self._tensorboard.write("train", {"lr": lr, **values, "images_per_s": images_per_s}, self.step)

    def _validate_and_save(self, val_log: CsvLog | None) -> None:
        metrics = self.validate()
        if metrics is not None and val_log is not None:
            self.last_val = metrics
            val_log.write({"epoch": self.epoch, "step": self.step, **metrics})
            if self._tensorboard is not None:
                self._tensorboard.write("val", metrics, self.step)
            shown = []
            if "psnr" in metrics:
                shown.append(f"val PSNR {metrics['psnr']:.3f} dB, SSIM {metrics['ssim']:.4f}")
            if "real_score" in metrics:
                shown.append(
                    "held-out " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k[:5] == "real_")
                )
            self.info(f"epoch {self.epoch} step {self.step}: {'; '.join(shown)}")
            if "real_score" in metrics:  # real-photo adaptation: the held-out score chooses best.pt
                if self.best_real is None or metrics["real_score"] < self.best_real:
                    self.best_real = metrics["real_score"]
                    self.best_psnr = metrics.get("psnr")
                    self.save("best.pt", averaged=True)
            elif self.best_psnr is None or metrics["psnr"] > self.best_psnr:
                self.best_psnr = metrics["psnr"]
                self.save("best.pt", averaged=True)
        self.save("last.pt")
        if self.is_main:
            plot_curves(
                self.out / "log.csv", self.out / "val.csv", self.out / "curves.png", self._loss_columns,
                val_column="real_score" if "real_score" in self._val_columns else "psnr",
            )  # fmt: skip
        self._barrier()

    def fit(self) -> TrainResult:
        """Train until ``optim.epochs`` or ``run.max_steps``; validate every ``run.val_every`` epochs and at the end;
        save ``last.pt`` at every epoch end, every ``run.save_every`` steps and at the end.

        Raises:
            DivergedError: a non-finite loss (``last.pt`` is not overwritten).
        """
        cfg = self.config
        if self.is_main:
            if self._overwrite:
                remove_outputs(self.out, self.info)
                self._overwrite = False
            self.out.mkdir(parents=True, exist_ok=True)
            if self._resumed:
                dropped = sum(truncate_csv(self.out / name, "step", self.step) for name in ("log.csv", "val.csv"))
                if dropped:
                    self.info(f"dropped {dropped} log row(s) written after step {self.step} by the interrupted run")
        val_log = CsvLog(self.out / "val.csv", ["epoch", "step", *self._val_columns]) if self.is_main else None
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
            if self.adapt is not None and self.step == 0 and self.adapt.heldout and val_log is not None:
                self._validate_and_save(val_log)  # the initial weights' held-out score: best.pt is never worse
            while self.epoch < cfg.optim.epochs and (max_steps is None or self.step < max_steps):
                if self.adapt is not None and self.adapt.due(self.epoch):
                    self.adapt.update(self.eval_net(), self.epoch, progress=cfg.run.progress)
                    self.save("last.pt")
                for rainy, clean in self._batches():
                    real = self.adapt.batch(self.step) if self.adapt is not None else None
                    values = self.train_step(rainy, clean, real)
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
            if self._tensorboard is not None:
                self._tensorboard.close()
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
            self.best_real,
        )
