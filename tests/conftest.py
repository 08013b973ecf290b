"""Shared fixtures: the read-only ``shared/`` folder beside the repository (checkpoints, golden data).

Its location is the ``SAPNET_SHARED`` environment variable, else ``<repository root>/../shared``. Tests that
need a part of it skip, saying why, when that part is absent.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sapnet.models.hub
from sapnet.data.builder import torch_threads

REPO_ROOT = Path(__file__).resolve().parent.parent
_HINT = "set SAPNET_SHARED or place shared/ beside the repository"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (it may not exist; use the fixtures below to skip when a part is missing)."""
    env = os.environ.get("SAPNET_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} ({path}) not found: {_HINT}")
    return path


@pytest.fixture(scope="session")
def compat_dir(shared_dir: Path) -> Path:
    """``shared/compat``: the public SAPNet / PReNet checkpoints and ``golden.npz``."""
    return _require_dir(shared_dir / "compat", "reference checkpoints folder shared/compat")


@pytest.fixture(scope="session")
def rain100l_dir(shared_dir: Path) -> Path:
    """``shared/data/Rain100L``: the Rain100L test pairs (``rain/``, ``clean/``)."""
    return _require_dir(shared_dir / "data" / "Rain100L", "Rain100L test set shared/data/Rain100L")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tests on tiny images: faster, and far faster on a loaded machine (no
    OpenMP spinning). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def ort() -> Any:
    """The onnxruntime module; skips unless onnx, onnxscript (for the dynamo exporter) and onnxruntime import."""
    for module in ("onnx", "onnxscript"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install 'sapnet[deploy]')")
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'sapnet[deploy]')")


@pytest.fixture
def weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry-weights cache (``TORCH_HOME`` in ``tmp_path``) and no mirror variable; returns the cache
    folder (which does not exist yet)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("SAPNET_WEIGHTS_DIR", raising=False)
    return sapnet.models.hub.cache_dir()


@pytest.fixture
def offline(weights_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """As :func:`weights_cache`, with every download failing as it does without network."""

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known (test: offline)")

    monkeypatch.setattr(sapnet.models.hub, "fetch_url", no_network)
    return weights_cache
