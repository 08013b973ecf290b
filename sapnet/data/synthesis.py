"""Physically plausible synthetic rain, calibrated against Rain100L / Rain100H.

Method (all pure torch, batched, on the input's device):

1. **Seeds.** Per depth layer, a sparse random field on a canvas padded beyond the image (so streaks enter from
   outside the frame): a pixel is a seed with probability ``density`` (seeds per pixel), with an amplitude
   uniform in ``[1 - intensity_jitter, 1]``.
2. **Motion blur.** The seeds are convolved (FFT, circular on the padded canvas) with one anti-aliased line
   kernel per image and layer: peak 1, random length in ``length``, thickness ``width``, angle ``angle +-
   angle_spread`` degrees from vertical per image (the wind, shared by the layers) ``+- layer_angle_spread``
   per layer; an optional Gaussian defocus ``blur`` is applied in the same Fourier product. This is the drop's
   motion during the exposure.
3. **Depth layers.** Layer ``k = 0 .. layers - 1`` (0 nearest) has lengths, width and fall speed scaled by
   ``scale_falloff ** k``, brightness by ``brightness_falloff ** k`` and density by ``density_growth ** k``: far
   rain is shorter, thinner, dimmer and denser. A layer's opacity is ``clamp(intensity * brightness * conv, 0,
   1)``; the layers are accumulated like stacked semi-transparent sheets, ``R = 1 - prod_k (1 - R_k)``.
4. **Splashes.** Optional small bright Gaussian blobs (``splash_prob`` per pixel, more likely towards the bottom
   where drops hit the ground), screened onto ``R``.
5. **Haze.** The atmospheric scattering model ``I = J t + A (1 - t)`` with uniform transmission
   ``t = 1 - haze`` and airlight ``A`` (grey, slightly bluish): the veiling of dense rain.
6. **Compositing** of the streak colour ``c`` (near-white, slightly bluish) with opacity ``R`` over the hazed
   image ``I``: ``"add"``: ``clamp(I + R c, 0, 1)`` (the Rain100L look), ``"screen"``: ``1 - (1 - I)(1 - R c)``,
   ``"over"``: ``I (1 - R) + R c`` (alpha compositing). Streaks are in front of the veil.

Sequence mode renders the N images as consecutive video frames: each layer's streak field is drawn once and,
frame to frame, translated along the streak direction by ``speed * scale_falloff ** k`` pixels (integer
shifts of the periodic canvas), so near rain moves faster than far rain; splashes are transient and re-drawn
per frame.

Randomness comes from a CPU ``torch.Generator`` seeded with ``seed`` (the draws are moved to the input's
device), so a seed gives bit-identical output on a given device, and each image of a batch gets its own rain.

Calibration (``benchmarks/synthesis.py``, the 100 Rain100L backgrounds, seed 0, rainy vs clean, Y channel):
``"light"`` matches the Rain100L rainy inputs (26.90 dB / 0.838 SSIM), ``"heavy"`` the Rain100H ones
(13.55 dB / 0.379).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["RAIN_PRESETS", "RainParams", "RainSynthesizer", "UnknownPresetError", "rain_preset", "synthesize_rain"]

CompositeMode = Literal["add", "screen", "over"]
_MODES = ("add", "screen", "over")


@dataclass(frozen=True)
class RainParams:
    """Every knob of the rain renderer (units and valid ranges per field; checked on construction).

    Attributes:
        density: seeds per pixel in the nearest layer, [0, 0.5].
        length: (min, max) streak length in pixels in the nearest layer, 1 <= min <= max <= 200; one length per
            image and layer, uniform in the range. A single number means a fixed length.
        width: streak thickness in pixels in the nearest layer, (0, 8]; below 1 the streak is a fainter 1 px line.
        angle: mean streak angle in degrees from vertical, [-80, 80]; positive leans right (falls towards +x).
        angle_spread: half-width in degrees of the uniform random angle offset per image (the wind, shared by
            all layers), [0, 90].
        layer_angle_spread: half-width in degrees of an extra uniform offset per layer (gusts; crossing streaks
            like Rain100H's), [0, 45].
        layers: number of depth layers, [1, 8].
        brightness_falloff: brightness multiplier per layer further away, (0, 1].
        scale_falloff: length / width / speed multiplier per layer further away, (0, 1].
        density_growth: density multiplier per layer further away, [1, 4].
        intensity: peak opacity of a nearest-layer streak, [0, 4] (values above 1 saturate overlaps sooner).
        intensity_jitter: per-seed amplitude spread, [0, 1]: amplitudes are uniform in [1 - jitter, 1].
        color: RGB streak colour, each in [0, 1].
        haze: veiling strength ``1 - t`` of the scattering model ``I = J t + A (1 - t)``, [0, 1).
        airlight: atmospheric light ``A`` (grey level; tinted by ``color``), [0, 1].
        splash_prob: splash centres per pixel, [0, 0.01].
        splash_size: splash Gaussian sigma in pixels, (0, 10].
        blur: Gaussian defocus sigma of the streaks in pixels, [0, 10].
        mode: compositing of the streaks over the hazed image: ``"add"``, ``"screen"`` or ``"over"``.
        speed: fall speed of the nearest layer in pixels per frame (``sequence=True`` only), [0, 500].
    """

    density: float = 0.004
    length: tuple[float, float] = (15.0, 35.0)
    width: float = 1.0
    angle: float = 0.0
    angle_spread: float = 10.0
    layer_angle_spread: float = 3.0
    layers: int = 2
    brightness_falloff: float = 0.7
    scale_falloff: float = 0.7
    density_growth: float = 1.5
    intensity: float = 0.8
    intensity_jitter: float = 0.5
    color: tuple[float, float, float] = (0.94, 0.96, 1.0)
    haze: float = 0.0
    airlight: float = 0.85
    splash_prob: float = 0.0
    splash_size: float = 1.2
    blur: float = 0.4
    mode: CompositeMode = "add"
    speed: float = 12.0

    def __post_init__(self) -> None:
        raw = self.length
        length: tuple[float, ...] = (float(raw),) * 2 if isinstance(raw, (int, float)) else tuple(map(float, raw))
        if len(length) != 2 or not 1.0 <= length[0] <= length[1] <= 200.0:
            raise ValueError(f"length must be (min, max) with 1 <= min <= max <= 200, got {self.length!r}")
        object.__setattr__(self, "length", length)
        color = tuple(float(v) for v in self.color)
        if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"color must be 3 values in [0, 1], got {self.color!r}")
        object.__setattr__(self, "color", color)
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or not 1 <= self.layers <= 8:
            raise ValueError(f"layers must be an int in [1, 8], got {self.layers!r}")
        checks = {
            "density": (0.0, 0.5, True, True),
            "width": (0.0, 8.0, False, True),
            "angle": (-80.0, 80.0, True, True),
            "angle_spread": (0.0, 90.0, True, True),
            "layer_angle_spread": (0.0, 45.0, True, True),
            "brightness_falloff": (0.0, 1.0, False, True),
            "scale_falloff": (0.0, 1.0, False, True),
            "density_growth": (1.0, 4.0, True, True),
            "intensity": (0.0, 4.0, True, True),
            "intensity_jitter": (0.0, 1.0, True, True),
            "haze": (0.0, 1.0, True, False),
            "airlight": (0.0, 1.0, True, True),
            "splash_prob": (0.0, 0.01, True, True),
            "splash_size": (0.0, 10.0, False, True),
            "blur": (0.0, 10.0, True, True),
            "speed": (0.0, 500.0, True, True),
        }
        for name, (lo, hi, lo_ok, hi_ok) in checks.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            if not ((lo <= v if lo_ok else lo < v) and (v <= hi if hi_ok else v < hi)):
                lb, rb = "[" if lo_ok else "(", "]" if hi_ok else ")"
                raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {v!r}")


# Calibrated on the 100 Rain100L backgrounds (benchmarks/synthesis.py): "light" ~ Rain100L rainy inputs,
# "heavy" ~ Rain100H rainy inputs. "medium" and "storm" sit below and above "heavy".
RAIN_PRESETS: dict[str, RainParams] = {
    "light": RainParams(
        density=0.00048,
        length=(14.0, 34.0),
        width=1.0,
        angle_spread=25.0,
        layers=3,
        density_growth=2.75,
        intensity=0.76,
        blur=0.4,
        mode="add",
    ),
    "medium": RainParams(
        density=0.0012,
        length=(18.0, 45.0),
        width=1.5,
        angle_spread=25.0,
        layers=3,
        density_growth=2.0,
        intensity=0.8,
        haze=0.08,
        splash_prob=2e-4,
        blur=0.5,
        mode="screen",
    ),
    "heavy": RainParams(
        density=0.003,
        length=(25.0, 60.0),
        width=2.0,
        angle_spread=30.0,
        layer_angle_spread=15.0,
        layers=3,
        density_growth=1.5,
        intensity=0.9,
        haze=0.18,
        splash_prob=5e-4,
        blur=0.4,
        mode="screen",
    ),
    "storm": RainParams(
        density=0.004,
        length=(30.0, 80.0),
        width=2.5,
        angle=15.0,
        angle_spread=20.0,
        layer_angle_spread=15.0,
        layers=4,
        density_growth=1.5,
        intensity=1.0,
        haze=0.25,
        splash_prob=1e-3,
        blur=0.4,
        mode="screen",
    ),
}

_FIELDS = tuple(f.name for f in dataclasses.fields(RainParams))


class UnknownPresetError(KeyError, ValueError):
    """A rain preset name that is not in :data:`RAIN_PRESETS`; the message lists the known ones.

    A ``KeyError`` like the package's other unknown-name lookups, and a ``ValueError`` like
    :func:`synthesize_rain`'s other invalid arguments. ``str()`` gives the plain message.
    """

    def __init__(self, name: object) -> None:
        super().__init__(f"unknown rain preset {name!r}; choose one of {', '.join(RAIN_PRESETS)}")

    def __str__(self) -> str:
        return str(self.args[0])


def rain_preset(name: str) -> RainParams:
    """The :data:`RAIN_PRESETS` entry called ``name`` (exact, case-sensitive).

    Raises:
        UnknownPresetError: any other name (or a non-string).
    """
    params = RAIN_PRESETS.get(name) if isinstance(name, str) else None
    if params is None:
        raise UnknownPresetError(name)
    return params


def _resolve(preset: str | RainParams, overrides: dict[str, Any]) -> RainParams:
    params = preset if isinstance(preset, RainParams) else rain_preset(preset)
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise TypeError(f"unknown rain parameter(s) {unknown}; valid names: {', '.join(_FIELDS)}")
    return dataclasses.replace(params, **overrides) if overrides else params


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating tensor with values in [0, 1], got dtype {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images must be (N, 3, H, W) or (3, H, W) RGB, got shape {tuple(images.shape)}")
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError("images must have values in [0, 1] (and no NaN)")


def _line_kernels(theta: torch.Tensor, length: torch.Tensor, width: float, size: int) -> torch.Tensor:
    """Anti-aliased line kernels (M, size, size), peak 1, for angles ``theta`` (M,) in radians from vertical."""
    r = size // 2
    coords = torch.arange(-r, r + 1, dtype=theta.dtype, device=theta.device)
    ys, xs = coords[:, None], coords[None, :]
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    along = (ys * cos + xs * sin).abs()
    perp = (xs * cos - ys * sin).abs()
    if width >= 1.0:
        across = ((width + 1.0) / 2.0 - perp).clamp(0.0, 1.0)
    else:
        across = width * (1.0 - perp).clamp(0.0, 1.0)
    lengthwise = (length[:, None, None] / 2.0 + 0.5 - along).clamp(0.0, 1.0)
    return across * lengthwise


def _fft_freqs(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Squared spatial frequency (h, w // 2 + 1) in cycles per pixel, for ``rfft2`` spectra."""
    fy = torch.fft.fftfreq(h, dtype=dtype, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=dtype, device=device)[None, :]
    return fy**2 + fx**2


def _splashes(
    n: int, h: int, w: int, p: RainParams, gen: torch.Generator, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Splash opacity (n, 1, h, w) in [0, 1]: Gaussian blobs, denser towards the bottom of the image."""
    u = torch.rand(n, h, w, generator=gen, dtype=dtype).to(device)
    amp = torch.rand(n, h, w, generator=gen, dtype=dtype).to(device)
    ramp = torch.linspace(0.0, 2.0, h, dtype=dtype, device=device)[:, None]
    seeds = (u < p.splash_prob * ramp).to(dtype) * (1.0 - p.intensity_jitter * amp)
    sigma = p.splash_size
    transfer = torch.exp(-2.0 * math.pi**2 * sigma**2 * _fft_freqs(h, w, dtype, device)) * (2 * math.pi * sigma**2)
    blobs = torch.fft.irfft2(torch.fft.rfft2(seeds) * transfer, s=(h, w))
    return (p.intensity * blobs).clamp(0.0, 1.0)[:, None]


def _streaks(
    n: int,
    h: int,
    w: int,
    p: RainParams,
    gen: torch.Generator,
    sequence: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Streak opacity (n, 1, h, w) in [0, 1], all depth layers accumulated."""
    m = 1 if sequence else n  # independent draws: one shared field for a video sequence
    keep = torch.ones(n, h, w, dtype=dtype, device=device)  # prod_k (1 - R_k)
    wind = p.angle + p.angle_spread * (2.0 * torch.rand(m, generator=gen, dtype=dtype) - 1.0)
    for k in range(p.layers):
        scale = p.scale_falloff**k
        lo, hi = p.length[0] * scale, p.length[1] * scale
        width = p.width * scale
        size = 2 * math.ceil(hi / 2.0 + width / 2.0 + 3.0 * p.blur + 1.0) + 1
        pad = size // 2 + 1
        hc, wc = h + 2 * pad, w + 2 * pad
        density = min(p.density * p.density_growth**k, 0.5)
        gust = p.layer_angle_spread * (2.0 * torch.rand(m, generator=gen, dtype=dtype) - 1.0)
        theta = torch.deg2rad(wind + gust)
        length = lo + (hi - lo) * torch.rand(m, generator=gen, dtype=dtype)
        u = torch.rand(m, hc, wc, generator=gen, dtype=dtype).to(device)
        amp = torch.rand(m, hc, wc, generator=gen, dtype=dtype).to(device)
        seeds = (u < density).to(dtype) * (1.0 - p.intensity_jitter * amp)
        kernel = torch.zeros(m, hc, wc, dtype=dtype, device=device)
        kernel[:, :size, :size] = _line_kernels(theta.to(device), length.to(device), width, size)
        kernel = kernel.roll((-(size // 2), -(size // 2)), dims=(1, 2))  # centre at (0, 0)
        spectrum = torch.fft.rfft2(seeds) * torch.fft.rfft2(kernel)
        if p.blur > 0:
            spectrum = spectrum * torch.exp(-2.0 * math.pi**2 * p.blur**2 * _fft_freqs(hc, wc, dtype, device))
        field = torch.fft.irfft2(spectrum, s=(hc, wc))
        layer = (p.intensity * p.brightness_falloff**k * field).clamp(0.0, 1.0)
        if sequence:
            step = p.speed * scale
            dy, dx = step * math.cos(float(theta[0])), step * math.sin(float(theta[0]))
            layer = torch.stack([layer[0].roll((round(t * dy), round(t * dx)), dims=(0, 1)) for t in range(n)])
        keep = keep * (1.0 - layer[:, pad : pad + h, pad : pad + w])
    return (1.0 - keep)[:, None]


def synthesize_rain(
    images: torch.Tensor,
    preset: str | RainParams = "heavy",
    seed: int = 0,
    *,
    sequence: bool = False,
    **overrides: Any,
) -> torch.Tensor:
    """Render synthetic rain over clean images (see the module docstring for the method).

    Args:
        images: clean RGB images (N, 3, H, W) or (3, H, W), floating dtype, values in [0, 1], any device.
        preset: a name in ``RAIN_PRESETS`` (``"light"``, ``"medium"``, ``"heavy"``, ``"storm"``) or a
            ``RainParams``.
        seed: seed of the random draws; the same seed gives bit-identical output on the same device.
        sequence: treat the N images as consecutive video frames: the streaks move coherently along their
            direction instead of being drawn anew per image.
        **overrides: ``RainParams`` fields replacing the preset's, e.g. ``density=0.01, haze=0.2``.

    Returns:
        Rainy images of the input's shape, dtype and device, values in [0, 1].

    Raises:
        TypeError: non-tensor or non-floating input, or an unknown override name (the message lists the valid
            ones).
        ValueError: wrong shape / channel count, values outside [0, 1] or an invalid value.
        UnknownPresetError: an unknown preset name (a ``ValueError`` and a ``KeyError``).

    Examples:
        >>> clean = torch.full((1, 3, 64, 64), 0.3)
        >>> rainy = synthesize_rain(clean, "light", seed=0)
        >>> rainy.shape, bool((rainy >= clean).all())  # rain only adds light
        (torch.Size([1, 3, 64, 64]), True)
        >>> torch.equal(rainy, synthesize_rain(clean, "light", seed=0))  # a function of the seed
        True
    """
    params = _resolve(preset, overrides)
    _check_images(images)
    single = images.ndim == 3
    x = images[None] if single else images
    n, _, h, w = x.shape
    if n == 0 or h == 0 or w == 0:
        return images.clone()
    device = x.device
    dtype = torch.float32
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))

    rain = _streaks(n, h, w, params, gen, sequence, dtype, device)
    if params.splash_prob > 0:
        rain = 1.0 - (1.0 - rain) * (1.0 - _splashes(n, h, w, params, gen, dtype, device))
    color = torch.tensor(params.color, dtype=dtype, device=device)[None, :, None, None]
    clean = x.to(dtype)
    t = 1.0 - params.haze
    hazed = clean * t + (params.airlight * color) * (1.0 - t)
    streaks = rain * color
    if params.mode == "add":
        out = hazed + streaks
    elif params.mode == "screen":
        out = 1.0 - (1.0 - hazed) * (1.0 - streaks)
    else:
        out = hazed * (1.0 - rain) + streaks
    out = out.clamp(0.0, 1.0).to(images.dtype)
    return out[0] if single else out


class RainSynthesizer(nn.Module):
    """``synthesize_rain`` as a module: fixed preset, seed and overrides; ``forward(images)`` as the function.

    Args:
        preset: preset name or ``RainParams``.
        seed: random seed (every call with the same input gives the same rain).
        sequence: render batches as consecutive video frames.
        **overrides: ``RainParams`` fields replacing the preset's (validated here).
    """

    def __init__(self, preset: str | RainParams = "heavy", seed: int = 0, *, sequence: bool = False, **overrides: Any):
        super().__init__()
        self.params = _resolve(preset, overrides)
        self.seed = seed
        self.sequence = sequence

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Rainy images, same shape / dtype / device as ``images`` ((N, 3, H, W) or (3, H, W) in [0, 1])."""
        return synthesize_rain(images, self.params, self.seed, sequence=self.sequence)

    def extra_repr(self) -> str:
        return f"params={self.params}, seed={self.seed}, sequence={self.sequence}"
