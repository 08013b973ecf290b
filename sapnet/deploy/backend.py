"""The ONNX Runtime backend of :func:`sapnet.derain`: a derain network as a cached ONNX Runtime session."""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, TypeGuard

import torch
from torch import nn

from sapnet.deploy.export import onnx_model
from sapnet.deploy.graph import METADATA_PREFIX
from sapnet.deploy.runtime import create_session, import_onnx, import_onnxruntime, session_providers

__all__ = [
    "BACKENDS",
    "SESSION_CACHE_SIZE",
    "Backend",
    "OnnxDerainer",
    "clear_session_cache",
    "is_onnx_file",
    "onnx_derainer",
]

Backend = Literal["torch", "onnxruntime"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnxruntime")
"""The values of ``sapnet.derain(..., backend=...)`` and ``sapnet derain --backend``."""

SESSION_CACHE_SIZE = 4
"""Sessions kept by :func:`onnx_derainer` (least recently used dropped first)."""

_DEFAULT_CHANNELS = 32

_cache: OrderedDict[tuple[Any, ...], OnnxDerainer] = OrderedDict()


def is_onnx_file(model: object) -> TypeGuard[str | os.PathLike[str]]:
    """Whether ``model`` is a path (``str`` / ``PathLike``) ending in ``.onnx``."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".onnx")


class OnnxDerainer:
    """A derain model run by ONNX Runtime, called like the network: (N, 3, H, W) float tensor in [0, 1] ->
    (N, 3, H, W) float32 CPU tensor (not clamped).

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        metadata: the model's sapnet metadata (keys without ``sapnet.``; empty for foreign files).
        channels: feature channels (``sapnet.channels``, else 32), for the tiling memory estimate.
        fixed_shape: the input shape a static model takes, ``None`` when batch, height and width are free.
    """

    def __init__(self, session: Any, name: str, metadata: dict[str, str] | None = None) -> None:
        self.session = session
        if metadata is None:
            n = len(METADATA_PREFIX)
            found = session.get_modelmeta().custom_metadata_map
            metadata = {k[n:]: v for k, v in found.items() if k.startswith(METADATA_PREFIX)}
        self.metadata = metadata
        self.name = name
        (inp,), (out, *_) = session.get_inputs(), session.get_outputs()
        if len(inp.shape) != 4 or inp.shape[1] not in (3, "3"):
            raise ValueError(f"{name}: input {inp.name} has shape {inp.shape}, not that of a derain model (N, 3, H, W)")
        self.input_name, self.output_name = inp.name, out.name
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        self.fixed_shape = tuple(dims) if all(d is not None for d in dims) else None
        self.dims = dims
        self.channels = int(metadata.get("channels", _DEFAULT_CHANNELS))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to(device="cpu", dtype=torch.float32).contiguous()
        wrong = [k for k, d in enumerate(self.dims) if d is not None and x.shape[k] != d]
        if x.dim() != 4 or wrong:
            want = "x".join(str(d) if d is not None else "?" for d in self.dims)
            raise ValueError(
                f"{self.name} takes inputs of shape {want}, got {'x'.join(map(str, x.shape))} (a static export: "
                "export with --dynamic / dynamic=True for other sizes)"
            )
        (y,) = self.session.run([self.output_name], {self.input_name: x.numpy()})
        return torch.from_numpy(y)

    def __repr__(self) -> str:
        return f"OnnxDerainer({self.name!r})"


def _weights_key(model: nn.Module) -> str:
    """SHA-256 of a network's class, config and state (names, shapes, dtypes, values): equal for equal weights,
    whatever the object, device or memory format."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    digest.update(json.dumps(to_dict() if callable(to_dict) else repr(config), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def onnx_derainer(
    model: nn.Module | str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> OnnxDerainer:
    """The ONNX Runtime session for a derain network or ``.onnx`` file, built once and cached.

    A network is exported with :func:`sapnet.deploy.onnx_model` with dynamic batch, height and width, so that one
    session serves every image size, tile and batch; sessions are cached (up to :data:`SESSION_CACHE_SIZE`)
    by the network's weights (their SHA-256: a network trained further gets a new session), or by the file's
    path, size and modification time, and by ``threads`` and the execution providers.

    Args:
        model: a network, or an ``.onnx`` file (e.g. from ``sapnet export``; float32 or int8).
        device: ``None`` / ``"cpu"``, or ``"cuda"`` with the onnxruntime-gpu build.
        threads: intra-op threads (default ``torch.get_num_threads()`` at the time of the call).

    Raises:
        ImportError: onnxruntime (or, to export a network, onnx / onnxscript) is not installed; the message names
            ``pip install 'sapnet[deploy]'``.
        FileNotFoundError: a missing ``.onnx`` file.
    """
    import_onnxruntime()
    providers = session_providers(device)
    threads = threads or torch.get_num_threads()
    if isinstance(model, nn.Module):
        import_onnx("the ONNX Runtime backend (it exports the network)")
        key: tuple[Any, ...] = ("network", _weights_key(model), threads, tuple(providers))
    else:
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {model} does not exist")
        st = path.stat()
        key = ("file", str(path), st.st_size, st.st_mtime_ns, threads, tuple(providers))
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached
    if isinstance(model, nn.Module):
        proto = onnx_model(model, dynamic=True)
        metadata = {"channels": str(getattr(getattr(model, "config", None), "channels", _DEFAULT_CHANNELS))}
        session = create_session(proto.SerializeToString(), threads=threads, providers=providers)
        derainer = OnnxDerainer(session, type(model).__name__, metadata)
    else:
        session = create_session(path, threads=threads, providers=providers)
        derainer = OnnxDerainer(session, path.name)
    _cache[key] = derainer
    while len(_cache) > SESSION_CACHE_SIZE:
        _cache.popitem(last=False)
    return derainer


def clear_session_cache() -> None:
    """Drop the sessions :func:`onnx_derainer` keeps."""
    _cache.clear()
