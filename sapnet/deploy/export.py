"""``sapnet.export_onnx``: a derain network as an ONNX file, float32 or int8, checked against PyTorch."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sapnet._version import __version__
from sapnet.data.synthesis import synthesize_rain
from sapnet.deploy.graph import (
    fold_constant_slices,
    name_dynamic_axes,
    read_metadata,
    set_metadata,
    use_global_average_pool,
)
from sapnet.deploy.runtime import create_session, import_onnx
from sapnet.hub import file_sha256
from sapnet.models import DEFAULT_MODEL, DerainNet, get_weights, load_model
from sapnet.models.registry import find_weights_by_sha256

__all__ = [
    "DEFAULT_EXPORT_SIZE",
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "ExportReport",
    "check_input",
    "compare_with_torch",
    "export_onnx",
    "onnx_model",
]

INPUT_NAME = "image"
OUTPUT_NAME = "derained"
DEFAULT_EXPORT_SIZE = (321, 481)
"""(height, width) of a static export, and of the check input: a Rain100L image (landscape)."""

MIN_OPSET = 18
"""The lowest opset ``torch.onnx.export(dynamo=True)`` writes (it converts to lower ones, but not this graph)."""

_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch.

    Attributes:
        path: the ``.onnx`` file.
        precision: ``"float32"`` or ``"int8"``.
        input_shape: the model input's shape, ``"batch"`` / ``"height"`` / ``"width"`` for dynamic axes.
        checked_shapes: the input shapes of the check (empty without one).
        max_abs_diff: largest ``|ONNX Runtime - PyTorch|`` over the check outputs (``None`` without a check).
        mean_abs_diff: mean of the same.
        metadata: the sapnet ``metadata_props`` of the file (keys without the ``sapnet.`` prefix).
    """

    path: Path
    precision: str
    input_shape: tuple[int | str, ...]
    checked_shapes: tuple[tuple[int, ...], ...]
    max_abs_diff: float | None
    mean_abs_diff: float | None
    metadata: dict[str, str]

    def summary(self) -> str:
        """One line: the file, its input and, when checked, the max (mean) difference to PyTorch."""
        shape = "x".join(str(d) for d in self.input_shape)
        text = f"wrote {self.path} ({self.precision}, input {shape})"
        if self.max_abs_diff is not None:
            shapes = ", ".join("x".join(map(str, s)) for s in self.checked_shapes)
            diff = f"{self.max_abs_diff:.3g} (mean {self.mean_abs_diff:.3g})"
            text += f"; max |ONNX Runtime - PyTorch| = {diff} on {shapes}"
        return text


def check_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A deterministic rainy test image, float32 ``shape`` = (N, 3, H, W) in [0, 1]: a smooth random
    background (8 x 8 noise upsampled bicubically) under ``"light"`` synthetic rain. Closer to real inputs than
    uniform noise, so that the int8 difference it shows is the one photos get."""
    n, c, h, w = (int(s) for s in shape)
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, 8, 8, generator=g)
    clean = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0.05, 0.95)
    return synthesize_rain(clean, "light", seed=seed)


def _export_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of ``model`` in eval mode (the caller's model is left where and as it is)."""
    net = copy.deepcopy(model).cpu().float().eval()
    return net.to(memory_format=torch.contiguous_format)


def onnx_model(
    model: nn.Module,
    *,
    dynamic: bool = True,
    size: tuple[int, int] = DEFAULT_EXPORT_SIZE,
    batch: int = 1,
    opset: int | None = None,
) -> Any:
    """Export ``model`` (a derain network: (N, 3, H, W) -> (N, 3, H, W)) with ``torch.onnx.export(dynamo=True)``
    and return the ``onnx.ModelProto``, input ``"image"``, output ``"derained"``, rewritten for ONNX Runtime
    (:mod:`sapnet.deploy.graph`), without sapnet metadata.

    Args:
        model: the network; a float32 CPU copy is exported under ``torch.no_grad`` (the zero-initial-state
            first stage has no recurrent-state convolutions).
        dynamic: batch, height and width free (named ``batch`` / ``height`` / ``width``); else fixed to
            ``(batch, 3, *size)``.
        size: (height, width) of the example input (the fixed shape when not ``dynamic``).
        batch: batch size of the example input.
        opset: ONNX opset, at least :data:`MIN_OPSET` (default: the exporter's).

    Raises:
        ImportError: onnx or onnxscript is not installed.
        ValueError: an opset below :data:`MIN_OPSET`, or one the exporter did not write.
    """
    if opset is not None and opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (the lowest torch.onnx.export writes), got {opset}")
    import_onnx()
    net = _export_copy(model)
    example = check_input((batch, 3, *size))
    dynamic_shapes = ({k: torch.export.Dim.DYNAMIC for k in _DYNAMIC_AXES},) if dynamic else None
    # The exporter reports its steps on stdout; a library call stays quiet (errors still raise).
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            verbose=False,
        )
    assert program is not None
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:
        raise ValueError(f"asked for opset {opset}, the exporter wrote opset {written}")
    if dynamic:
        name_dynamic_axes(proto, _DYNAMIC_AXES)
    fold_constant_slices(proto)
    use_global_average_pool(proto)
    for node in proto.graph.node:  # the exporter's stack traces name this machine's file paths
        kept = [(p.key, p.value) for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        for key, value in kept:
            entry = node.metadata_props.add()
            entry.key, entry.value = key, value
    proto.doc_string = (
        "sapnet derain network: input 'image' float32 (N, 3, H, W) RGB in [0, 1]; output 'derained' float32 "
        "(N, 3, H, W) RGB, not clamped (clamp to [0, 1]). See the sapnet.* metadata."
    )
    return proto


def _weights_metadata(model: nn.Module | str | os.PathLike[str], net: nn.Module) -> dict[str, str]:
    """``model`` / ``weights`` / ``weights_sha256`` entries for what is known of the weights' origin."""
    meta: dict[str, str] = {}
    known = getattr(net, "metadata", None)
    registry = known.get("registry_name") if isinstance(known, dict) else None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        meta["model"] = os.fspath(model)
        if path.is_file():
            meta["weights"] = path.name
            meta["weights_sha256"] = file_sha256(path)
            entry = find_weights_by_sha256(meta["weights_sha256"])
            registry = entry.name if entry is not None else registry
        elif path.is_dir():
            meta["weights"] = path.name
        else:
            registry = registry or os.fspath(model)
    if registry:
        try:
            entry = get_weights(registry)
        except KeyError:
            pass
        else:
            meta.update(model=entry.name, weights=entry.filename, weights_sha256=entry.sha256)
    meta.setdefault("model", type(net).__name__)
    return meta


def _describe(net: nn.Module, dynamic: bool, shape: tuple[int | str, ...]) -> dict[str, str]:
    shape_text = "(" + ", ".join(str(d) for d in shape) + ")"
    free = "batch, height and width free" if dynamic else "fixed shape"
    meta = {
        "version": __version__,
        "input": f"{INPUT_NAME}: float32 {shape_text} ({free}), RGB, values in [0, 1], NCHW",
        "output": f"{OUTPUT_NAME}: float32, the input's shape, RGB, not clamped: clamp to [0, 1]",
        "preprocess": "RGB image as float32 / 255 (8-bit) or / 65535 (16-bit), channels first; no mean / std "
        "normalisation, no resizing or padding (any height and width)",
        "postprocess": "clamp to [0, 1]; x 255 and round for 8-bit output",
        "shape": "dynamic" if dynamic else "static",
    }
    config = getattr(net, "config", None)
    if isinstance(net, DerainNet):
        meta["stages"] = str(net.config.stages)
        meta["channels"] = str(net.config.channels)
        meta["config"] = json.dumps(net.config.to_dict(), sort_keys=True)
        if net.source is not None:
            meta["source"] = net.source
    elif config is not None:
        meta["config"] = repr(config)
    return meta


def compare_with_torch(
    session: Any, model: nn.Module, shapes: Sequence[Sequence[int]], seed: int = 0
) -> tuple[float, float]:
    """(max, mean) of ``|session(x) - model(x)|`` over :func:`check_input` images of ``shapes``; ``model`` runs
    as a float32 CPU copy."""
    net = _export_copy(model)
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    worst, total, count = 0.0, 0.0, 0
    for k, shape in enumerate(shapes):
        x = check_input(shape, seed + k)
        with torch.inference_mode():
            expected = net(x)
        (got,) = session.run([output_name], {input_name: x.numpy()})
        diff = (torch.from_numpy(got) - expected).abs()
        worst = max(worst, float(diff.max()))
        total += float(diff.sum())
        count += diff.numel()
    return worst, total / max(count, 1)


def export_onnx(
    model: nn.Module | str | os.PathLike[str] | None,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dynamic: bool = False,
    size: tuple[int, int] = DEFAULT_EXPORT_SIZE,
    batch: int = 1,
    int8: bool = False,
    calibrate: str | os.PathLike[str] | None = None,
    calibration_size: tuple[int, int] | None = None,
    calibration_limit: int | None = None,
    check: bool = True,
    weights_dir: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> ExportReport:
    """Export a derain network to an ONNX file, float32 or int8, and check it with ONNX Runtime.

    The file's input ``"image"`` is float32 (N, 3, H, W) RGB in [0, 1] and its output ``"derained"`` the same
    shape, not clamped (clamp it to [0, 1]); the ``metadata_props`` say so (``sapnet.input``, ``sapnet.output``,
    ``sapnet.preprocess``, ``sapnet.postprocess``) and record ``sapnet.version``, ``sapnet.model``, the weights'
    name and SHA-256 when known, ``sapnet.stages`` / ``sapnet.channels`` / ``sapnet.config``,
    ``sapnet.shape`` and ``sapnet.precision`` (:func:`sapnet.deploy.read_metadata` reads them).

    Args:
        model: a network, a registry name, a checkpoint file or folder (as :func:`sapnet.load_model`), or
            ``None`` for :data:`sapnet.models.DEFAULT_MODEL`.
        path: the ``.onnx`` file to write (its folder is created).
        opset: ONNX opset, 18 or newer (default: the exporter's).
        dynamic: batch, height and width free; else the file takes only ``(batch, 3, *size)``.
        size: (height, width) of the example and check input (default: Rain100L's 321 x 481).
        batch: batch size of the example and check input.
        int8: write an int8 model (static QDQ quantisation, per-channel weights, see
            :func:`sapnet.deploy.quantize_int8`) calibrated on the images of ``calibrate``.
        calibrate: folder of rainy images for ``int8``.
        calibration_size: (height, width) the calibration images are cut to (default
            :data:`sapnet.deploy.quantize.CALIBRATION_SIZE`).
        calibration_limit: use at most this many calibration images (default: all).
        check: run the file in ONNX Runtime on :func:`check_input` images (the export shape, and for a dynamic
            export also another batch size and an odd smaller size) against PyTorch float32, and report the
            difference.
        weights_dir: offline mirror folder for registry weights.
        source: the registry name or file a network passed as ``model`` was loaded from, for the metadata
            (``sapnet.model``, ``sapnet.weights``, ``sapnet.weights_sha256``).

    Raises:
        ImportError: onnx / onnxscript (or, for ``int8`` or ``check``, onnxruntime) is not installed; the message
            names ``pip install 'sapnet[deploy]'``.
        ValueError: ``int8`` without ``calibrate`` (or the reverse), or a calibration folder without images.
    """
    if int8 != (calibrate is not None):
        raise ValueError("int8 export needs calibrate=FOLDER of rainy images, and calibrate needs int8=True")
    if batch < 1 or min(size) < 1:
        raise ValueError(f"batch and size must be positive, got batch={batch}, size={size}")
    onnx = import_onnx()
    target = DEFAULT_MODEL if model is None else model
    net = target if isinstance(target, nn.Module) else load_model(target, weights_dir=weights_dir)
    proto = onnx_model(net, dynamic=dynamic, size=size, batch=batch, opset=opset)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)
    metadata = {
        **_describe(net, dynamic, shape),
        **_weights_metadata(source if source is not None else target, net),
        "precision": "float32",
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if int8:
        from sapnet.deploy.quantize import quantize_int8

        assert calibrate is not None
        quantize_int8(proto, out, calibrate, size=calibration_size, limit=calibration_limit, metadata=metadata)
        proto = onnx.load(str(out))
    else:
        set_metadata(proto, metadata)
        onnx.save(proto, str(out))
    checked: tuple[tuple[int, ...], ...] = ()
    worst = mean = None
    if check:
        h, w = size
        checked = ((batch, 3, h, w),)
        if dynamic:
            checked += ((batch + 1, 3, max(1, h // 2 + 1), max(1, w // 2 + 3)),)
        session = create_session(out, purpose="checking the export")
        worst, mean = compare_with_torch(session, net, checked)
    return ExportReport(out, read_metadata(proto)["precision"], shape, checked, worst, mean, read_metadata(proto))
