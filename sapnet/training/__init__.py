"""Training SAPNet / PReNet: configuration, patch data, the (multi-GPU, resumable) trainer and its logs."""

from sapnet.training.config import (
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from sapnet.training.data import PatchDataset, ResumableSampler
from sapnet.training.logging import CsvLog, plot_curves
from sapnet.training.trainer import DivergedError, Trainer, TrainResult, build_loss, get_rng_state, set_rng_state

__all__ = [
    "ConfigError",
    "CsvLog",
    "DataConfig",
    "DivergedError",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PatchDataset",
    "ResumableSampler",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_loss",
    "get_rng_state",
    "plot_curves",
    "set_rng_state",
]
