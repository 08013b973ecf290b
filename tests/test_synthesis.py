"""Rain synthesis: API contract, determinism, sequences, validation and the Rain100L / Rain100H calibration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import sapnet
from sapnet.cli import main
from sapnet.data import (
    RAIN_PRESETS,
    RainParams,
    RainSynthesizer,
    UnknownPresetError,
    build_rain_set,
    demo_dataset,
    rain_preset,
    read_image,
    synthesize_rain,
)
from sapnet.metrics import psnr, ssim

PRESETS = sorted(RAIN_PRESETS)


def _smooth(n: int = 2, h: int = 48, w: int = 40, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A smooth synthetic background (n, 3, h, w) in [0.2, 0.6]."""
    y = torch.linspace(0, 1, h, dtype=dtype)[:, None]
    x = torch.linspace(0, 1, w, dtype=dtype)[None, :]
    base = 0.2 + 0.2 * (x + y) + torch.zeros(3, 1, 1, dtype=dtype)
    return (base[None] * torch.linspace(0.8, 1.0, n, dtype=dtype)[:, None, None, None]).contiguous()


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_shape_dtype_range_batched(preset: str, dtype: torch.dtype) -> None:
    x = _smooth(3, dtype=dtype)
    out = synthesize_rain(x, preset, seed=1)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert not torch.equal(out, x)


@pytest.mark.parametrize("preset", ["light", "heavy"])
def test_single_image_shape(preset: str) -> None:
    x = _smooth(1)[0]
    out = synthesize_rain(x, preset)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, synthesize_rain(x[None], preset)[0])


def test_extreme_inputs_stay_in_range() -> None:
    for value in (0.0, 1.0):
        out = synthesize_rain(torch.full((2, 3, 20, 24), value), "storm", seed=3)
        assert 0.0 <= out.min() and out.max() <= 1.0


def test_sapnet_exports() -> None:
    assert sapnet.synthesize_rain is synthesize_rain
    assert {"light", "heavy"} <= set(RAIN_PRESETS)


@pytest.mark.parametrize("preset", ["light", "heavy"])
def test_deterministic_per_seed(preset: str) -> None:
    x = _smooth(2)
    a, b = synthesize_rain(x, preset, seed=7), synthesize_rain(x, preset, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, synthesize_rain(x, preset, seed=8))


def test_batch_images_get_different_rain() -> None:
    x = torch.full((3, 3, 40, 40), 0.3)
    out = synthesize_rain(x, "heavy", seed=0, haze=0.0)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])


def test_overrides() -> None:
    x = _smooth(1)
    base = synthesize_rain(x, "light", seed=0)
    denser = synthesize_rain(x, "light", seed=0, density=0.01)
    assert (denser - x).abs().mean() > (base - x).abs().mean()
    # haze only: the scattering model with uniform transmission, exactly.
    hazed = synthesize_rain(x, "light", seed=0, intensity=0.0, haze=0.5, airlight=1.0, color=(1.0, 1.0, 1.0))
    torch.testing.assert_close(hazed, x * 0.5 + 0.5)
    # a RainParams works as a preset, and overrides equal the replaced dataclass
    params = dataclasses.replace(RAIN_PRESETS["heavy"], angle=20.0)
    assert torch.equal(synthesize_rain(x, params, seed=2), synthesize_rain(x, "heavy", seed=2, angle=20.0))


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"densty": 0.1}, TypeError),
        ({"density": -1.0}, ValueError),
        ({"haze": 1.0}, ValueError),
        ({"mode": "multiply"}, ValueError),
        ({"layers": 0}, ValueError),
        ({"length": (30.0, 10.0)}, ValueError),
        ({"color": (1.0, 2.0, 0.0)}, ValueError),
    ],
)
def test_bad_overrides(overrides: dict, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        synthesize_rain(_smooth(1), "light", **overrides)
    if error is TypeError:
        assert "density" in str(info.value) and "haze" in str(info.value)  # lists the valid names
    with pytest.raises(error):
        RainSynthesizer("light", **overrides)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="light"):
        synthesize_rain(_smooth(1), "drizzle")


@pytest.mark.parametrize("name", list(RAIN_PRESETS))
def test_rain_preset_lookup(name: str) -> None:
    assert rain_preset(name) is RAIN_PRESETS[name]


@pytest.mark.parametrize("name", ["drizzle", "Heavy", " heavy", "", 3, None])
def test_rain_preset_unknown_name(name: object) -> None:
    with pytest.raises(UnknownPresetError) as info:
        rain_preset(name)  # type: ignore[arg-type]
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value) == f"unknown rain preset {name!r}; choose one of light, medium, heavy, storm"
    assert list(RAIN_PRESETS) == ["light", "medium", "heavy", "storm"]  # the message lists every preset


def test_one_unknown_preset_error_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = str(UnknownPresetError("drizzle"))
    calls = {
        "synthesize_rain": lambda: synthesize_rain(_smooth(1), "drizzle"),
        "RainSynthesizer": lambda: RainSynthesizer("drizzle"),
        "build_rain_set": lambda: build_rain_set(tmp_path / "photos", tmp_path / "set", preset="drizzle"),
        "demo_dataset": lambda: demo_dataset(tmp_path / "demo", preset="drizzle"),
    }
    for where, call in calls.items():
        with pytest.raises(UnknownPresetError) as info:
            call()
        assert str(info.value) == expected, where
    assert not list(tmp_path.iterdir())  # refused before anything was written
    capsys.readouterr()
    assert (
        main(["synth", "--clean", str(tmp_path / "photos"), "--out", str(tmp_path / "set"), "--preset", "drizzle"]) == 2
    )
    assert expected in capsys.readouterr().err
    assert main(["evaluate", "--task", "detection", "--rain", "drizzle", "--out", str(tmp_path / "out")]) == 2
    assert expected in capsys.readouterr().err


def test_presets_order_on_smooth_image() -> None:
    x = _smooth(4, 64, 64)
    p_light = psnr(synthesize_rain(x, "light"), x).mean()
    p_heavy = psnr(synthesize_rain(x, "heavy"), x).mean()
    assert p_heavy < p_light - 5.0


def _best_shift_corr(a: torch.Tensor, b: torch.Tensor, radius: int) -> float:
    """Max correlation of the interior of ``b`` with ``a`` shifted by up to ``radius`` pixels."""
    r = radius
    inner = b[r:-r, r:-r].flatten()
    best = -1.0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = a[r - dy : a.shape[0] - r - dy, r - dx : a.shape[1] - r - dx].flatten()
            best = max(best, torch.corrcoef(torch.stack([shifted, inner]))[0, 1].item())
    return best


def test_sequence_rain_moves_coherently() -> None:
    black = torch.zeros(3, 3, 64, 64)
    rain = dict(density=0.01, layers=1, haze=0.0, splash_prob=0.0, speed=4.0, angle=20.0, angle_spread=0.0)
    seq = synthesize_rain(black, "heavy", seed=5, sequence=True, **rain).mean(1)
    indep = synthesize_rain(black, "heavy", seed=5, **rain).mean(1)
    # frame t+1 is frame t moved by ~4 px down and to the right along the 20 degree streaks
    moved = _best_shift_corr(seq[0], seq[1], radius=6)
    assert moved > 0.99
    assert _best_shift_corr(indep[0], indep[1], radius=6) < 0.5
    direct = seq[0].roll((4, 1), dims=(0, 1))  # round(4 cos 20), round(4 sin 20)
    torch.testing.assert_close(direct[8:, 8:], seq[1][8:, 8:])
    # with several depth layers the frames stay far more alike than independent draws
    multi = dict(rain, layers=3)
    seq3 = synthesize_rain(black, "heavy", seed=5, sequence=True, **multi).mean(1)
    ind3 = synthesize_rain(black, "heavy", seed=5, **multi).mean(1)
    assert _best_shift_corr(seq3[0], seq3[1], 6) > _best_shift_corr(ind3[0], ind3[1], 6) + 0.3


def test_module_equals_function() -> None:
    x = _smooth(2)
    module = RainSynthesizer("light", seed=4, density=0.002)
    assert torch.equal(module(x), synthesize_rain(x, "light", seed=4, density=0.002))
    assert "seed=4" in repr(module)
    seq = RainSynthesizer("heavy", seed=1, sequence=True)
    assert torch.equal(seq(x), synthesize_rain(x, "heavy", seed=1, sequence=True))


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, "floating"),
        (torch.zeros(1, 1, 8, 8), ValueError, "RGB"),
        (torch.zeros(8, 8), ValueError, "RGB"),
        (torch.full((1, 3, 8, 8), 1.5), ValueError, r"\[0, 1\]"),
        (torch.full((3, 8, 8), -0.1), ValueError, r"\[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), ValueError, r"\[0, 1\]"),
    ],
)
def test_input_validation(images: torch.Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        synthesize_rain(images)


def test_rain_params_frozen_and_length_scalar() -> None:
    p = RainParams(length=20)
    assert p.length == (20.0, 20.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.density = 0.1  # type: ignore[misc]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = _smooth(2)
    out = synthesize_rain(x.cuda(), "heavy", seed=3)
    assert out.device.type == "cuda" and out.dtype == x.dtype
    assert torch.equal(out, synthesize_rain(x.cuda(), "heavy", seed=3))
    torch.testing.assert_close(out.cpu(), synthesize_rain(x, "heavy", seed=3), atol=1e-4, rtol=0)


# Targets: rainy inputs vs clean, Y-PSNR / Y-SSIM (Rain100L measured here; Rain100H published).
TARGETS = {"light": (26.90, 0.838), "heavy": (13.55, 0.379)}


def test_calibration_against_rain100(rain100l_dir: Path) -> None:
    # every 5th of the 100 backgrounds: an even spread (the first 20 alone are darker / busier than the set)
    paths = sorted((rain100l_dir / "clean").glob("*.png"))[::5]
    if not paths:
        pytest.skip(f"no clean backgrounds in {rain100l_dir / 'clean'}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for path in paths:
        image = read_image(path)
        groups.setdefault(tuple(image.shape), []).append(image)
    for preset, (target_psnr, target_ssim) in TARGETS.items():
        p, s = [], []
        for images in groups.values():
            clean = torch.stack(images)
            rainy = synthesize_rain(clean, preset, seed=0)
            p.append(psnr(rainy, clean))
            s.append(ssim(rainy, clean))
        mean_p, mean_s = torch.cat(p).mean().item(), torch.cat(s).mean().item()
        assert abs(mean_p - target_psnr) <= 1.0, (preset, mean_p)
        assert abs(mean_s - target_ssim) <= 0.03, (preset, mean_s)
