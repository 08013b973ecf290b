"""ONNX Runtime and the ONNX tools: importing them with a clear error, and the one way sapnet builds a session.

Every ``onnxruntime.InferenceSession`` of sapnet (the derain backend, the export check, the YOLOX detector of
:mod:`sapnet.downstream`) comes from :func:`create_session`, so the thread and optimisation settings are the same
everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["DEPLOY_EXTRA", "create_session", "import_onnx", "import_onnxruntime", "session_providers"]

DEPLOY_EXTRA = "deploy"
"""The extra that installs ONNX export and ONNX Runtime: ``pip install 'sapnet[deploy]'``."""


def _install_hint(extra: str) -> str:
    return f"pip install 'sapnet[{extra}]'"


def import_onnxruntime(purpose: str = "the ONNX Runtime backend", extra: str = DEPLOY_EXTRA) -> Any:
    """The ``onnxruntime`` module, or ``ImportError`` saying that ``purpose`` needs it and which extra installs it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"{purpose} needs onnxruntime: {_install_hint(extra)}") from e
    return onnxruntime


def import_onnx(purpose: str = "ONNX export") -> Any:
    """The ``onnx`` module, after checking that ``onnxscript`` (which ``torch.onnx.export(dynamo=True)`` needs)
    imports too; ``ImportError`` naming the ``deploy`` extra otherwise."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError as e:
        raise ImportError(f"{purpose} needs onnx and onnxscript: {_install_hint(DEPLOY_EXTRA)}") from e
    return onnx


def session_providers(device: torch.device | str | None = None, extra: str = DEPLOY_EXTRA) -> list[str]:
    """ONNX Runtime execution providers for ``device``: the CPU for ``None`` / ``"cpu"``, CUDA (falling back to
    the CPU for unsupported nodes) for ``"cuda"`` when this onnxruntime build has it, else ``ValueError``."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        ort = import_onnxruntime(extra=extra)
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                "device 'cuda' with ONNX Runtime needs the onnxruntime-gpu build (this onnxruntime offers "
                f"{', '.join(ort.get_available_providers())})"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"ONNX Runtime runs on 'cpu' or 'cuda', not {kind!r}")


def create_session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    purpose: str = "the ONNX Runtime backend",
    extra: str = DEPLOY_EXTRA,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for an ONNX file or serialised model.

    Settings: ``threads`` intra-op threads (default ``torch.get_num_threads()``, so ``torch.set_num_threads``
    governs both backends), one inter-op thread and sequential execution (the derain graphs are a chain of
    convolutions: parallelism within each operator is what pays), every graph optimisation (``ORT_ENABLE_ALL``,
    which includes the CPU's blocked NCHWc convolution layout), warnings only from onnxruntime's log.

    Raises:
        ImportError: onnxruntime is not installed (the message names ``pip install 'sapnet[<extra>]'``).
        Whatever onnxruntime raises for a file that is not a loadable model (its own exception types).
    """
    ort = import_onnxruntime(purpose, extra)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=list(providers or ["CPUExecutionProvider"]))
