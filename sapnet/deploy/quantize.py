"""int8 derain models: static quantisation (QDQ, per-channel weights) calibrated on a folder of rainy images."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from sapnet.data.image import IMAGE_EXTENSIONS, read_image
from sapnet.data.listing import list_images
from sapnet.deploy.graph import read_metadata, set_metadata, split_concat_convs
from sapnet.deploy.runtime import import_onnx, import_onnxruntime

__all__ = [
    "CALIBRATION_SIZE",
    "CalibrationMethod",
    "ImageFolderCalibration",
    "calibration_image",
    "int8_nodes",
    "quantize_int8",
]

CALIBRATION_SIZE = (128, 128)
"""(height, width) the calibration images are cut to by default."""

CalibrationMethod = Literal["minmax", "percentile", "entropy"]


def calibration_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image`` (3, H, W) cut to ``size`` = (h, w): scaled up (bilinear) only when smaller than ``size`` on a
    side, keeping its aspect ratio, then cropped at the centre; rain streaks keep their scale otherwise."""
    th, tw = size
    h, w = image.shape[-2:]
    scale = max(th / h, tw / w)
    if scale > 1:
        h, w = max(th, round(h * scale)), max(tw, round(w * scale))
        image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    top, left = (h - th) // 2, (w - tw) // 2
    return image[:, top : top + th, left : left + tw].contiguous()


class ImageFolderCalibration:
    """Calibration inputs for ``onnxruntime.quantization.quantize_static``: the images of a folder, each read
    with :func:`sapnet.data.read_image` and cut to ``size`` (:func:`calibration_image`), one (1, 3, h, w)
    float32 array in [0, 1] per :meth:`get_next` call.

    Args:
        folder: the images (its files with an image extension, natural order; sub-folders are not searched).
        size: (height, width) of each calibration input.
        limit: use at most this many images (the first ones).
        input_name: the model input they are fed to.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it has no image files.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        size: tuple[int, int] = CALIBRATION_SIZE,
        limit: int | None = None,
        input_name: str = "image",
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"calibration folder {self.folder} does not exist or is not a folder")
        files = list_images(self.folder)
        if not files:
            extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(f"calibration folder {self.folder} has no image files ({extensions})")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        self.files = files[:limit]
        self.size = size
        self.input_name = input_name
        self._next = 0

    def __len__(self) -> int:
        return len(self.files)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next input as ``{input_name: array (1, 3, h, w)}``, or ``None`` after the last image."""
        if self._next >= len(self.files):
            return None
        image = calibration_image(read_image(self.files[self._next]), self.size)
        self._next += 1
        return {self.input_name: image[None].numpy()}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._next = 0


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop onnxruntime's root-logger advice to run its model pre-processing, which does not apply: the graph
    rewrites of :mod:`sapnet.deploy.graph` already fold the constants, and the exporter records every shape."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def int8_nodes(model: Any) -> list[str]:
    """The nodes :func:`quantize_int8` quantises, by their place in a derain graph:

    * convolutions over feature maps: a kernel larger than 1 x 1 and more than 3 output channels (the stages'
      last convolution, which gives the image, stays float: rounding the estimate costs the most for the least
      work; so do channel attention's 1 x 1 convolutions of the pooled vector, which cost nothing);
    * channel attention's products (a feature map times a (N, C, 1, 1) weight) and every ReLU;
    * the sums whose every use is a ReLU (the residual connections ``relu(block(z) + z)``).

    The LSTM's gates and state, the attention's sigmoid and the input skip stay float; so the int8 convolutions
    mostly feed each other without going back to float in between.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    rank_shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            rank_shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim
            ]
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chosen = []
    for node in graph.node:
        if node.op_type == "Conv":
            weight = initializers.get(node.input[1])
            ok = weight is not None and list(weight.dims[2:]) != [1, 1] and weight.dims[0] > 3
        elif node.op_type == "Mul":
            ok = any(rank_shapes.get(name, [])[2:] == [1, 1] for name in node.input)
        elif node.op_type == "Add":
            uses = consumers.get(node.output[0], [])
            ok = bool(uses) and all(use.op_type == "Relu" for use in uses)
        else:
            ok = node.op_type == "Relu"
        if ok:
            chosen.append(node.name)
    return chosen


def quantize_int8(
    model: Any,
    output: str | os.PathLike[str],
    calibration: str | os.PathLike[str] | Any,
    *,
    size: tuple[int, int] | None = None,
    limit: int | None = None,
    method: CalibrationMethod = "minmax",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write an int8 version of a float derain model: ONNX Runtime static quantisation in QDQ format.

    What is quantised (:func:`int8_nodes`): the convolutions over feature maps, with int8 weights per output
    channel and uint8 activations per tensor, and the element-wise operations between them (attention products,
    ReLUs, residual sums); the convolutions of concatenated inputs are first split
    (:func:`~sapnet.deploy.graph.split_concat_convs`) so that each input gets its own scale. The LSTM's gates and
    state, the convolution that gives each stage's image and channel attention's 1 x 1 convolutions stay float.
    On x86 the int8 convolutions need AVX512-VNNI / AVX-VNNI (or AMX) to be fast.

    Args:
        model: the float model (an ``onnx.ModelProto`` from :func:`sapnet.deploy.onnx_model`, or an ``.onnx``
            path); not changed.
        output: the int8 ``.onnx`` file to write.
        calibration: a folder of rainy images (:class:`ImageFolderCalibration`), or any object with a
            ``get_next()`` returning ``{input_name: array}`` and then ``None``.
        size: (height, width) of the calibration inputs cut from a folder's images (default
            :data:`CALIBRATION_SIZE`).
        limit: use at most this many of a folder's images.
        method: how activation ranges are set from the calibration outputs: ``"minmax"`` (their extremes),
            ``"percentile"`` (99.999 % of the values) or ``"entropy"``.
        metadata: ``sapnet.*`` metadata to write (default: the float model's), with ``precision`` set to
            ``int8`` and ``quantization`` describing the calibration.

    Returns:
        ``output`` as a ``Path``.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
        FileNotFoundError / ValueError: a calibration folder that does not exist or has no images; an unknown
            ``method``.
    """
    onnx = import_onnx("int8 quantisation")
    ort = import_onnxruntime("int8 quantisation")
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    methods = {"minmax": OrtMethod.MinMax, "percentile": OrtMethod.Percentile, "entropy": OrtMethod.Entropy}
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")
    float_model = copy.deepcopy(model) if hasattr(model, "graph") else onnx.load(os.fspath(model))
    input_name = float_model.graph.input[0].name
    if isinstance(calibration, (str, os.PathLike)):
        reader: Any = ImageFolderCalibration(calibration, size or CALIBRATION_SIZE, limit, input_name)
        source = f"{len(reader)} images of {calibration}, cut to {'x'.join(map(str, reader.size))}"
    else:
        reader, source = calibration, type(calibration).__name__
    meta = dict(metadata) if metadata is not None else read_metadata(float_model)
    split_concat_convs(float_model)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sapnet-int8-") as tmp:
        # The calibrator writes an augmented copy of the model next to its input: keep both in a scratch folder.
        source_path = Path(tmp) / "float.onnx"
        onnx.save(float_model, str(source_path))
        with _without_preprocessing_advice():
            quantize_static(
                str(source_path),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv", "Mul", "Add", "Relu"],
                nodes_to_quantize=int8_nodes(float_model),
                calibrate_method=methods[method],
                extra_options={"CalibTensorRangeSymmetric": False},
            )
    quantized = onnx.load(str(out))
    meta.update(
        precision="int8",
        quantization=f"static QDQ (onnxruntime {ort.__version__}): feature-map convolutions with int8 per-channel "
        "weights and uint8 activations, and the attention products, ReLUs and residual sums between them; "
        f"{method} ranges calibrated on {source}",
    )
    set_metadata(quantized, meta)
    onnx.save(quantized, str(out))
    return out
