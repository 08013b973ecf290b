"""The SAPNet / PReNet network family: the network, its registry of architectures and published weights, the
one resolver from names and files to models, checkpoint I/O and the weights cache."""

from sapnet.models.blocks import ChannelResidualAttention, ConvGRUCell, ConvLSTMCell, ResidualBlock
from sapnet.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    convert_reference_state_dict,
    load_checkpoint,
    load_training_state,
    load_weights,
    save_model,
    save_training_state,
    unwrap_model,
)
from sapnet.models.derain_net import DerainNet, DerainNetConfig, keep_unchanged
from sapnet.models.factory import create_model, load_model
from sapnet.models.hub import WeightsError, WeightsHashError, cache_dir, download_weights, weights_file
from sapnet.models.registry import (
    ARCHITECTURES,
    DEFAULT_MODEL,
    WEIGHTS,
    Architecture,
    WeightsEntry,
    get_weights,
    list_models,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "WEIGHTS",
    "Architecture",
    "ChannelResidualAttention",
    "Checkpoint",
    "CheckpointError",
    "ConvGRUCell",
    "ConvLSTMCell",
    "DerainNet",
    "DerainNetConfig",
    "ResidualBlock",
    "WeightsEntry",
    "WeightsError",
    "WeightsHashError",
    "cache_dir",
    "convert_reference_state_dict",
    "create_model",
    "download_weights",
    "get_weights",
    "keep_unchanged",
    "list_models",
    "load_checkpoint",
    "load_model",
    "load_training_state",
    "load_weights",
    "save_model",
    "save_training_state",
    "unwrap_model",
    "weights_file",
]
