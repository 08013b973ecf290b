"""Training SAPNet / PReNet: configuration, patch data, the (multi-GPU, resumable) trainer, its state and logs, and
the pseudo-label bank for real rainy photos (:mod:`sapnet.training.pseudo_labels`)."""

from sapnet.training.config import (
    RESUME_FREE_KEYS,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from sapnet.training.data import PatchDataset, ResumableSampler
from sapnet.training.ema import WeightEMA
from sapnet.training.logging import CsvLog, TensorBoardLog, plot_curves, truncate_csv
from sapnet.training.pseudo_labels import (
    DEFAULT_PSEUDO_METRICS,
    INPUT,
    PseudoLabel,
    PseudoLabelBank,
    PseudoLabelLoss,
    PseudoLabelWarning,
    PseudoPairs,
    Teacher,
    UpdateSummary,
    hflip_average,
    kept_input,
    mean_ranks,
    model_teacher,
    pseudo_label_loss,
    rank_order,
    registry_teachers,
    with_hflip_averages,
    with_kept_input,
)
from sapnet.training.state import get_rng_state, set_rng_state
from sapnet.training.trainer import DivergedError, Trainer, TrainResult

__all__ = [
    "DEFAULT_PSEUDO_METRICS",
    "INPUT",
    "RESUME_FREE_KEYS",
    "ConfigError",
    "CsvLog",
    "DataConfig",
    "DivergedError",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PatchDataset",
    "PseudoLabel",
    "PseudoLabelBank",
    "PseudoLabelLoss",
    "PseudoLabelWarning",
    "PseudoPairs",
    "ResumableSampler",
    "RunConfig",
    "Teacher",
    "TensorBoardLog",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "UpdateSummary",
    "WeightEMA",
    "get_rng_state",
    "hflip_average",
    "kept_input",
    "mean_ranks",
    "model_teacher",
    "plot_curves",
    "pseudo_label_loss",
    "rank_order",
    "registry_teachers",
    "set_rng_state",
    "truncate_csv",
    "with_hflip_averages",
    "with_kept_input",
]
