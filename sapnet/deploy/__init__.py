"""Deployment: ONNX export (float32 and int8) and the ONNX Runtime backend of :func:`sapnet.derain`.

* :func:`export_onnx` / ``sapnet export``: a network as an ``.onnx`` file, dynamic or fixed shape, with its
  pre- and post-processing in the metadata, checked against PyTorch in ONNX Runtime;
* :func:`quantize_int8`: static int8 quantisation (QDQ, per-channel weights) calibrated on rainy images;
* :func:`onnx_derainer`: the cached ONNX Runtime session behind ``sapnet.derain(..., backend="onnxruntime")``;
* :func:`create_session`: the one place sessions are built (threads, providers, the missing-package error).

Needs ``pip install 'sapnet[deploy]'`` (onnx, onnxscript, onnxruntime); importing this package does not.
"""

from sapnet.deploy.backend import BACKENDS, OnnxDerainer, clear_session_cache, is_onnx_file, onnx_derainer
from sapnet.deploy.export import DEFAULT_EXPORT_SIZE, ExportReport, check_input, export_onnx, onnx_model
from sapnet.deploy.graph import read_metadata
from sapnet.deploy.quantize import CALIBRATION_SIZE, ImageFolderCalibration, quantize_int8
from sapnet.deploy.runtime import DEPLOY_EXTRA, create_session, import_onnx, import_onnxruntime

__all__ = [
    "BACKENDS",
    "CALIBRATION_SIZE",
    "DEFAULT_EXPORT_SIZE",
    "DEPLOY_EXTRA",
    "ExportReport",
    "ImageFolderCalibration",
    "OnnxDerainer",
    "check_input",
    "clear_session_cache",
    "create_session",
    "export_onnx",
    "import_onnx",
    "import_onnxruntime",
    "is_onnx_file",
    "onnx_derainer",
    "onnx_model",
    "quantize_int8",
    "read_metadata",
]
