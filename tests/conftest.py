"""Shared fixtures: the read-only ``shared/`` folder beside the repository (checkpoints, golden data).

Its location is the ``SAPNET_SHARED`` environment variable, else ``<repository root>/../shared``. Tests that
need a part of it skip, saying why, when that part is absent.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import torch

import sapnet
import sapnet.models.hub
from sapnet.data import write_image
from sapnet.data.builder import torch_threads
from sapnet.video import frame_name, render_clip

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


@pytest.fixture(scope="module")
def one_cv2_thread() -> Iterator[None]:
    """OpenCV (DIS optical flow) on one thread for a module of tests on tiny frames, as torch is by
    ``one_thread``. Use with ``pytestmark = pytest.mark.usefixtures("one_thread", "one_cv2_thread")``."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.fixture(scope="module")
def model() -> sapnet.DerainNet:
    """A tiny PReNet (2 stages, 8 channels, random weights from seed 0) in eval mode."""
    torch.manual_seed(0)
    return sapnet.create_model("prenet", stages=2, channels=8).eval()


@pytest.fixture(scope="module")
def ckpt(model: sapnet.DerainNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`model` saved as a checkpoint (``tiny.pt``) once per module."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    sapnet.save_model(model, path)
    return path


@pytest.fixture(scope="session")
def write_pan_clip() -> Callable[..., None]:
    """Writes a tiny synthetic clip: ``write_pan_clip(folder, seed, *, size, frames, clean=True)`` renders a camera
    panning over one contrasty random photo with light rain (:func:`sapnet.video.render_clip`, ``seed``) into
    ``folder/rain/`` and, with ``clean``, ``folder/clean/`` (PNG frames named as :func:`sapnet.video.frame_name`)."""
    photo = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 164, 164, generator=torch.Generator().manual_seed(1)), 5, 1)
    photo = ((photo[0] - 0.5) * 3 + 0.5).clamp(0, 1)

    def write(folder: Path, seed: int, *, size: tuple[int, int], frames: int, clean: bool = True) -> None:
        rainy, truth = render_clip(photo, "pan", size=size, frames=frames, preset="light", seed=seed)
        for i in range(frames):
            write_image(rainy[i], folder / "rain" / frame_name(i))
            if clean:
                write_image(truth[i], folder / "clean" / frame_name(i))

    return write


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
