"""A small paired demo set that needs no download: procedural clean images plus synthetic rain.

:func:`demo_dataset` draws ``n`` clean images with a deterministic procedural generator (a sky-to-ground
gradient, a smooth 1/f colour field, a handful of anti-aliased shapes and straight edges, some filled with
stripes, checks or grain, under a soft illumination field, plus mild sensor noise), adds rain with
:func:`sapnet.data.synthesis.synthesize_rain` and writes ``train/`` and ``test/`` folders in the ``rain_clean``
layout. It is built once and cached.

This is a DEMO set for smoke tests, tutorials and CI: its images only resemble natural photos in their coarse
statistics. Scores on it are not comparable with anything published; use the real benchmarks for that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sapnet.data.builder import render_pairs, torch_threads
from sapnet.data.image import quantize_8bit
from sapnet.files import atomic_write

__all__ = ["DEMO_GENERATOR_VERSION", "default_cache_dir", "demo_dataset", "procedural_image"]

#: Bump when :func:`procedural_image` changes, so cached demo sets built by an older generator are not reused.
DEMO_GENERATOR_VERSION = 1

_MARKER = ".complete.json"


def default_cache_dir() -> Path:
    """``$SAPNET_CACHE`` if set, else ``~/.cache/sapnet``."""
    env = os.environ.get("SAPNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sapnet"


def _rng(seed: int, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"sapnet-demo\0{seed}\0{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _smooth_field(rng: np.random.Generator, size: int, channels: int, beta: float = 1.0) -> np.ndarray:
    """Sum of upsampled random grids with amplitude ~ 1/frequency**beta: (size, size, channels), roughly [-1, 1]."""
    total = np.zeros((size, size, channels), np.float32)
    cells, amp, norm = 2, 1.0, 0.0
    while cells <= max(2, size // 4):
        grid = rng.normal(size=(cells, cells, channels)).astype(np.float32)
        layers = [
            np.asarray(Image.fromarray(grid[:, :, c], mode="F").resize((size, size), Image.Resampling.BICUBIC))
            for c in range(channels)
        ]
        total += amp * np.stack(layers, axis=-1)
        norm += amp
        cells *= 2
        amp /= 2**beta
    return total / (2 * norm)


def _texture(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """A (size, size, 3) float texture around colour ``base``: stripes, checks or grain."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle and period
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(3, 12)
        pattern = np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period)
    elif kind == 1:  # checks
        cell = int(rng.integers(3, 10))
        pattern = (((x // cell) + (y // cell)) % 2) * 2 - 1
    else:  # grain, slightly smoothed
        pattern = rng.normal(size=(size, size)).astype(np.float32)
        pattern = (pattern + np.roll(pattern, 1, 0) + np.roll(pattern, 1, 1)) / 3
    contrast = rng.uniform(0.05, 0.2)
    return np.clip(base[None, None, :] + contrast * pattern[:, :, None], 0, 1)


def procedural_image(size: int, rng: np.random.Generator) -> torch.Tensor:
    """One clean, natural-looking-ish image: float32 tensor (3, size, size) in [0, 1], on the 8-bit grid.

    Deterministic for a given ``rng`` state.
    """
    s = size
    y = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    # Sky over ground, meeting at a soft horizon.
    sky_top = np.array([rng.uniform(0.2, 0.5), rng.uniform(0.4, 0.7), rng.uniform(0.6, 0.95)], np.float32)
    sky_low = np.clip(sky_top + rng.uniform(0.1, 0.3), 0, 1)
    ground = rng.uniform([0.15, 0.2, 0.05], [0.55, 0.55, 0.4]).astype(np.float32)
    horizon = rng.uniform(0.3, 0.7)
    sky = sky_top + (sky_low - sky_top) * np.clip(y / horizon, 0, 1)
    ground_img = ground * (1 - 0.4 * np.clip((y - horizon) / (1 - horizon), 0, 1))
    blend = 1 / (1 + np.exp(-(y - horizon) * s / 3))
    img = np.broadcast_to(sky * (1 - blend) + ground_img * blend, (s, s, 3)).copy()
    img += 0.12 * _smooth_field(rng, s, 3, beta=1.0)

    # Shapes drawn at 2x and downsampled (anti-aliased edges); some filled with a texture.
    big = 2 * s
    canvas = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), "RGB").resize((big, big))
    for _ in range(int(rng.integers(3, 9))):
        mask = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0, big, 2)
        rx, ry = rng.uniform(0.05, 0.3, 2) * big
        kind = rng.integers(4)
        if kind == 0:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        elif kind == 1:
            draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        elif kind == 2:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=255)
        else:  # a straight edge: pole, branch, wire
            x2, y2 = rng.uniform(0, big, 2)
            draw.line([(cx, cy), (x2, y2)], fill=255, width=int(rng.integers(2, 10)))
        hue = rng.uniform(0.05, 0.95, 3)
        base = (hue + (1 - rng.uniform(0.3, 0.8)) * (hue.mean() - hue)).astype(np.float32)  # muted colours
        if rng.uniform() < 0.4:
            fill = _texture(rng, big, base)
        else:
            fill = np.broadcast_to(base, (big, big, 3))
        fill_img = Image.fromarray((fill * 255).round().astype(np.uint8), "RGB")
        canvas = Image.composite(fill_img, canvas, mask)
    img = np.asarray(canvas.resize((s, s), Image.Resampling.BOX), dtype=np.float32) / 255

    # Soft illumination (shading, vignetting-like falloff) and a little sensor noise.
    light = 1 + 0.25 * _smooth_field(rng, s, 1, beta=1.5)
    img = img * light + rng.normal(0, 0.008, img.shape).astype(np.float32)
    img = np.clip(img, 0, 1)
    # Rounded to the 8-bit grid: the image is what write_image stores for it.
    return quantize_8bit(torch.from_numpy(img), "round").permute(2, 0, 1).float().contiguous()


def _params(n: int, size: int, preset: str, seed: int) -> dict[str, object]:
    from sapnet.data.synthesis import rain_preset

    params = rain_preset(preset)
    return {
        "generator": DEMO_GENERATOR_VERSION,
        "n": n,
        "size": size,
        "preset": preset,
        "seed": seed,
        # The preset's parameters: editing a preset invalidates the cached set.
        "rain": json.loads(json.dumps(dataclasses.asdict(params), sort_keys=True, default=repr)),
    }


def demo_dataset(
    root: str | os.PathLike[str] | None = None,
    n: int = 32,
    size: int = 128,
    preset: str = "heavy",
    seed: int = 0,
) -> Path:
    """Build (once) and return a small demo set: ``root/train`` and ``root/test``, each ``rain/`` + ``clean/``.

    The last ``max(1, n // 4)`` images are the test split (default: 24 train + 8 test pairs of 128x128, a few
    seconds on one CPU core). Nothing is downloaded.

    Args:
        root: where to build it. ``None``: ``default_cache_dir() / "demo-<hash>"``, the hash covering every
            parameter, the generator version and the rain preset's settings, so a changed set gets a new folder.
        n: clean images in all (>= 2: one for each split at least).
        size: side of the square images in pixels.
        preset: rain preset (see :data:`sapnet.data.synthesis.RAIN_PRESETS`).
        seed: makes another, equally deterministic set.

    Returns:
        ``root``. Once complete it holds ``.complete.json``; a later call with the same parameters returns at
        once, and an interrupted build resumes where it stopped.

    Raises:
        ValueError: ``n`` < 2 or ``size`` < 16; a ``root`` completed with other parameters.
        UnknownPresetError: unknown ``preset`` (a ``KeyError``).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 (train and test need one image each), got {n}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    params = _params(n, size, preset, seed)
    if root is None:
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        root = default_cache_dir() / f"demo-{key}"
    root = Path(root)
    marker = root / _MARKER
    if marker.is_file():
        try:
            done = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            done = None
        if done == params:
            return root
        if done is not None:
            raise ValueError(f"{root} holds a demo set built with other parameters; choose another root")

    n_test = max(1, n // 4)
    with torch_threads(1):  # small images: one thread is fastest, and far faster on a busy machine
        for i in range(n):
            split = "train" if i < n - n_test else "test"
            stem = f"demo_{i:04d}"
            out = root / split
            if (out / "rain" / f"{stem}.png").is_file() and (out / "clean" / f"{stem}.png").is_file():
                continue
            clean = procedural_image(size, _rng(seed, i))
            render_pairs(clean, stem, out, preset=preset, per_image=1, seed=seed)

    with atomic_write(marker) as tmp:
        tmp.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    readme = root / "README.txt"
    if not readme.exists():
        readme.write_text(
            "sapnet demo set: procedurally generated clean images with synthetic rain (sapnet.data.embedded).\n"
            "For smoke tests and tutorials only; NOT a benchmark, scores are not comparable with published ones.\n",
            encoding="utf-8",
        )
    return root
