"""The resumable part of a training run besides the weights: optimiser, scheduler, gradient scaler and RNG states,
as values ``torch.load(..., weights_only=True)`` reads (tensors, numbers, strings, lists, dicts), and back; and
reading a checkpoint to resume from."""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

import numpy as np
import torch

from sapnet.models import Checkpoint, load_training_state
from sapnet.training.config import ConfigError, TrainConfig

__all__ = ["get_rng_state", "load_optimisation_state", "optimisation_state", "read_resume_state", "set_rng_state"]


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


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def optimisation_state(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.MultiStepLR | None,
    scaler: torch.amp.GradScaler,
) -> dict[str, Any]:
    """``{"optimizer", "scheduler", "scaler"}`` state dicts on the CPU (``scheduler`` ``None`` without one; the
    scheduler's ``Counter`` of milestones stored as a plain dict)."""
    sched = None
    if scheduler is not None:
        sched = dict(scheduler.state_dict())
        sched["milestones"] = {int(k): int(v) for k, v in sched["milestones"].items()}
    return {"optimizer": _to_cpu(optimizer.state_dict()), "scheduler": sched, "scaler": scaler.state_dict()}


def load_optimisation_state(
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.MultiStepLR | None,
    scaler: torch.amp.GradScaler,
) -> None:
    """Inverse of :func:`optimisation_state` (the optimiser's tensors move to its parameters' device)."""
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
        scheduler.milestones = Counter(scheduler.milestones)
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


def read_resume_state(path: str | os.PathLike[str], config: TrainConfig) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint and training state of ``path``, after checking that ``config`` continues its run.

    Raises:
        sapnet.CheckpointError: unreadable file or no training state.
        ConfigError: ``config`` differs from the checkpoint's ``train_config`` in a key outside
            :data:`~sapnet.training.config.RESUME_FREE_KEYS` (each such key is named with both values).
    """
    checkpoint, training = load_training_state(path)
    saved = checkpoint.metadata.get("train_config")
    if isinstance(saved, dict):
        diff = config.resume_differences(TrainConfig.from_dict(saved, source=f"{path} (train_config)"))
        if diff:
            raise ConfigError(
                f"{path}: resuming with other settings would not continue the same run: {'; '.join(diff)}. "
                "Use the checkpoint's values (the CLI reads them from the checkpoint when --config is not given) "
                "or start a new run in another --out"
            )
    return checkpoint, training
