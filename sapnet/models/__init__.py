"""The SAPNet / PReNet network family, its presets and checkpoint I/O."""

from sapnet.models.blocks import ChannelResidualAttention, ConvGRUCell, ConvLSTMCell, ResidualBlock
from sapnet.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    convert_reference_state_dict,
    load_checkpoint,
    load_model,
    load_weights,
    save_model,
    unwrap_model,
)
from sapnet.models.derain_net import DerainNet, DerainNetConfig
from sapnet.models.factory import PRESETS, create_model, list_models

__all__ = [
    "PRESETS",
    "ChannelResidualAttention",
    "Checkpoint",
    "CheckpointError",
    "ConvGRUCell",
    "ConvLSTMCell",
    "DerainNet",
    "DerainNetConfig",
    "ResidualBlock",
    "convert_reference_state_dict",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "save_model",
    "unwrap_model",
]
