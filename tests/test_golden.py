"""Exactness against the reference implementations: the public checkpoints in shared/compat reproduce the
golden outputs (computed with the original SAPNet / PReNet code) within 1e-4 in float32 on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sapnet

TOLERANCE = 1e-4
# checkpoint file -> (golden array prefix, expected source)
GOLDEN = {
    "sapnet_official_rain100h.pth": ("sapnet", "sapnet-reference"),
    "prenet_official_rain100l.pth": ("prenet_rain100l", "prenet-reference"),
}


@pytest.fixture(scope="module")
def golden(compat_dir: Path) -> dict[str, np.ndarray]:
    path = compat_dir / "golden.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found: set SAPNET_SHARED or place shared/ beside the repository")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def golden_input(golden: dict[str, np.ndarray]) -> torch.Tensor:
    """(3, 96, 128, 3) uint8 NHWC -> (3, 3, 96, 128) float32 NCHW in [0, 1]."""
    x = torch.from_numpy(golden["input_uint8"]).permute(0, 3, 1, 2).float() / 255
    return x.contiguous()


def checkpoint(compat_dir: Path, name: str) -> Path:
    path = compat_dir / name
    if not path.is_file():
        pytest.skip(f"{path} not found: set SAPNET_SHARED or place shared/ beside the repository")
    return path


def max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().cpu().numpy() - b).max())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_outputs_and_stages(
    compat_dir: Path, golden: dict[str, np.ndarray], golden_input: torch.Tensor, name: str
) -> None:
    prefix, source = GOLDEN[name]
    model = sapnet.load_model(checkpoint(compat_dir, name))
    assert model.source == source
    assert model.config.stages == 6 and model.config.channels == 32
    with torch.no_grad():
        final, stages = model(golden_input, return_stages=True)
    assert final.dtype == torch.float32
    assert max_diff(final, golden[f"{prefix}_output"]) <= TOLERANCE
    expected_stages = golden[f"{prefix}_stages"]
    assert len(stages) == expected_stages.shape[1] == 6
    for t, stage in enumerate(stages):
        assert max_diff(stage, expected_stages[:, t]) <= TOLERANCE, f"stage {t + 1}"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_channels_last(
    compat_dir: Path, golden: dict[str, np.ndarray], golden_input: torch.Tensor, name: str
) -> None:
    prefix, _ = GOLDEN[name]
    model = sapnet.load_model(checkpoint(compat_dir, name)).to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(golden_input.contiguous(memory_format=torch.channels_last))
    assert max_diff(out, golden[f"{prefix}_output"]) <= TOLERANCE


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_through_derain(
    compat_dir: Path, golden: dict[str, np.ndarray], golden_input: torch.Tensor, name: str
) -> None:
    prefix, _ = GOLDEN[name]
    model = sapnet.load_model(checkpoint(compat_dir, name))
    out = sapnet.derain(golden_input, model)
    assert out.shape == golden_input.shape and out.dtype == torch.float32
    assert max_diff(out, np.clip(golden[f"{prefix}_output"], 0, 1)) <= TOLERANCE
    # Also with the checkpoint given by path, on one uint8 HxWx3 array (rounded to nearest).
    arr = sapnet.derain(golden["input_uint8"][2], checkpoint(compat_dir, name))
    expected = np.clip(golden[f"{prefix}_output"][2], 0, 1).transpose(1, 2, 0) * 255
    assert arr.dtype == np.uint8 and arr.shape == expected.shape
    assert np.abs(arr.astype(np.float64) - expected).max() <= 0.5 + 255 * TOLERANCE


def test_prenet_rain100h_loads(compat_dir: Path, golden_input: torch.Tensor) -> None:
    """No golden arrays for this file: it must load as PReNet and derain plausibly."""
    model = sapnet.load_model(checkpoint(compat_dir, "prenet_official_rain100h.pth"))
    assert model.source == "prenet-reference"
    assert model.metadata == {}
    assert model.config == sapnet.create_model("prenet").config
    with torch.no_grad():
        out = model(golden_input)
    assert out.shape == golden_input.shape
    assert torch.isfinite(out).all()
    # Rain removal changes pixels, but the image stays the same scene.
    diff = (out - golden_input).abs()
    assert 1e-3 < diff.mean() < 0.1
    assert -0.5 < out.min() and out.max() < 1.5


@pytest.mark.parametrize(
    ("name", "preset"),
    [
        ("sapnet_official_rain100h.pth", "sapnet"),
        ("prenet_official_rain100h.pth", "prenet"),
        ("prenet_official_rain100l.pth", "prenet"),
    ],
)
def test_public_checkpoints_load_into_their_preset_only(compat_dir: Path, name: str, preset: str) -> None:
    path = checkpoint(compat_dir, name)
    model = sapnet.create_model(preset, checkpoint_path=path)
    assert not model.training
    assert model.source == f"{preset}-reference"
    other = "prenet" if preset == "sapnet" else "sapnet"
    with pytest.raises(sapnet.CheckpointError, match="different network"):
        sapnet.create_model(other, checkpoint_path=path)
