"""sapnet: single-image deraining with SAPNet and PReNet."""

from sapnet._version import __version__
from sapnet.data import ImageConversionWarning, ImageReadError, read_image, synthesize_rain, write_image
from sapnet.deploy import export_onnx
from sapnet.inference import derain
from sapnet.models import (
    CheckpointError,
    DerainNet,
    DerainNetConfig,
    create_model,
    list_models,
    load_model,
    save_model,
)

__all__ = [
    "CheckpointError",
    "DerainNet",
    "DerainNetConfig",
    "ImageConversionWarning",
    "ImageReadError",
    "__version__",
    "create_model",
    "derain",
    "export_onnx",
    "list_models",
    "load_model",
    "read_image",
    "save_model",
    "synthesize_rain",
    "write_image",
]
