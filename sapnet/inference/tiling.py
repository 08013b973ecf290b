"""Tiled inference: run a model over overlapping tiles and blend them back together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

__all__ = [
    "ACTIVATION_BYTES_PER_PIXEL_CHANNEL",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_TILE",
    "DEFAULT_TILE_OVERLAP",
    "TILE_SLACK",
    "Tile",
    "activation_bytes",
    "blend_window",
    "check_tiling",
    "choose_tile",
    "image_tiles",
    "tile_span",
    "tiled_apply",
]

DEFAULT_TILE = 448
"""Tile edge in pixels used when an image is too large to be processed whole (see :func:`choose_tile`).

SAPNet's channel attention pools over the whole (tile) image, so a tile's output depends on the tile's
statistics and tiling is never exact; the agreement grows with the tile size, not with the overlap. At 448 and
a 32-pixel overlap, tiled results agree with whole-image results at >= 50 dB PSNR (Rain100L images cut into two
tiles of 448, and a 1792x1344 crop of a real photo); see ``benchmarks/RESULTS.md``."""
DEFAULT_TILE_OVERLAP = 32

TILE_SLACK = 1.125
"""How much larger than the tile size asked for :func:`tile_span` lets tiles grow to cover a side evenly. On this
project's CPU machine (2 cores of an Intel Xeon, torch 2.14.1, float32) SAPNet runs at 8.5-9.4 s per megapixel
on tiles from 256x256 to 456x473 and at 13.5-13.8 s on 512x512 and 640x640 (a whole 1792x1344 crop: 12.1 s):
hence the default tile of 448 and a slack that keeps tiles under 504 pixels a side."""

ACTIVATION_BYTES_PER_PIXEL_CHANNEL = 48
"""Peak forward-pass memory of a derain network per image pixel and feature channel, in bytes (float32).
Measured as the peak resident-memory growth of one CPU forward pass under ``torch.inference_mode``: about
1450 bytes per pixel for the 32-channel PReNet and SAPNet at 512x512 and 1024x1024; rounded up."""

DEFAULT_MEMORY_BUDGET = 4 * 2**30
"""Activation memory (bytes) up to which an image is processed whole by default: 4 GiB, which is about
2.7 megapixels for a 32-channel network (e.g. 2000x1360) and keeps a 24 GiB machine safe."""


def activation_bytes(height: int, width: int, channels: int, batch: int = 1) -> int:
    """Estimated peak memory, in bytes, of a forward pass over ``batch`` images of ``height`` x ``width`` pixels
    through a network with ``channels`` feature channels (see :data:`ACTIVATION_BYTES_PER_PIXEL_CHANNEL`)."""
    return batch * height * width * channels * ACTIVATION_BYTES_PER_PIXEL_CHANNEL


def choose_tile(height: int, width: int, channels: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """The default way to process an image: ``0`` (whole) when its :func:`activation_bytes` fit in
    ``memory_budget``, else :data:`DEFAULT_TILE`."""
    return 0 if activation_bytes(height, width, channels) <= memory_budget else DEFAULT_TILE


def check_tiling(tile: int, overlap: int) -> None:
    """Raise ``ValueError`` unless ``tile >= 1`` and ``0 <= overlap < tile``."""
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile), got tile_overlap={overlap}, tile={tile}")


def tile_span(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """The tiles along one side of ``length`` pixels: their common size and their start offsets, spread evenly
    from 0 to ``length`` with at least ``overlap`` pixels shared by neighbours.

    The size is as close to ``tile`` as the side allows with little overlap: ``n = (length - overlap) // (tile -
    overlap)`` tiles of ``ceil((length + (n - 1) * overlap) / n)``, at least ``tile``; when that exceeds
    :data:`TILE_SLACK` x ``tile``, one tile more (each then smaller than ``tile``). A side up to ``tile`` is one
    tile. So about ``(n - 1) * overlap`` pixels are computed twice, where fixed tiles of ``tile`` with the last
    one pulled back to the edge compute up to a whole tile twice (4000 x 3000 with tiles of 448: 16.1 megapixels
    for 12, against 13.6 here).
    """
    check_tiling(tile, overlap)
    if length <= tile:
        return length, [0]
    n = max(1, (length - overlap) // (tile - overlap))
    size = -(-(length + (n - 1) * overlap) // n)
    if size > TILE_SLACK * tile:
        n += 1
        size = -(-(length + (n - 1) * overlap) // n)
    if n == 1:
        return length, [0]
    return size, [i * (length - size) // (n - 1) for i in range(n)]


def blend_window(size: int, ramp: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blending weights (float32, shape (size,)): 1 inside, a linear ramp over ``ramp`` pixels on each
    side that borders another tile (``at_start`` / ``at_end`` false), strictly positive everywhere."""
    w = torch.ones(size)
    ramp = min(ramp, size // 2)
    if ramp > 0:
        up = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
        if not at_start:
            w[:ramp] = up
        if not at_end:
            w[size - ramp :] = up.flip(0)
    return w


def _quiet(progress: bool | None, steps: int) -> bool | None:
    """tqdm's ``disable`` for a bar of ``steps`` steps: none for a single step, else as ``progress`` asks."""
    if steps < 2:
        return True
    return None if progress is None else not progress


@dataclass(frozen=True)
class Tile:
    """One tile of an image: rows ``y : y + h``, columns ``x : x + w``, and its blending weights ``weight``
    (float32 (h, w), strictly positive; linear ramps towards the neighbouring tiles)."""

    y: int
    x: int
    h: int
    w: int
    weight: torch.Tensor

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """The tile's part of ``t`` (..., H, W)."""
        return t[..., self.y : self.y + self.h, self.x : self.x + self.w]


def image_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """The overlapping tiles that :func:`tiled_apply` cuts a ``height`` x ``width`` image into, row by row
    (:func:`tile_span` along each side: tiles of about ``tile`` x ``tile``, spread evenly).
    Blending per-tile results ``r_i`` as ``sum(r_i * weight_i) / sum(weight_i)`` (each over its tile) is how
    :func:`tiled_apply` puts the image back together."""
    th, ys = tile_span(height, tile, overlap)
    tw, xs = tile_span(width, tile, overlap)
    tiles = []
    for y in ys:
        wy = blend_window(th, overlap, y == 0, y + th == height)
        for x in xs:
            wx = blend_window(tw, overlap, x == 0, x + tw == width)
            tiles.append(Tile(y, x, th, tw, wy[:, None] * wx[None, :]))
    return tiles


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int,
    device: torch.device,
    batch_size: int = 1,
    *,
    progress: bool | None = False,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``image`` and blend the results.

    Args:
        fn: maps a batch (B, 3, h, w) on ``device`` to a batch of the same shape.
        image: (1, 3, H, W) float32, on any device (typically the CPU; it stays there).
        tile: tile edge in pixels: tiles are about ``tile`` x ``tile`` (:func:`tile_span`: at most
            :data:`TILE_SLACK` x ``tile`` a side).
        overlap: pixels shared by neighbouring tiles, blended with linear ramps.
        device: where ``fn`` runs; tiles are moved there ``batch_size`` at a time and the results back.
        batch_size: tiles per call of ``fn``.
        progress: show a tqdm bar over the tiles (on stderr, with an ETA, removed when done; nested under any
            bar already shown, e.g. one over files); ``None``: only when stderr is a terminal.

    Returns:
        (1, 3, H, W) float32 on ``image``'s device.
    """
    check_tiling(tile, overlap)
    _, _, h, w = image.shape
    out = torch.zeros(image.shape, dtype=torch.float32, device=image.device)
    weight = torch.zeros((1, 1, h, w), dtype=torch.float32, device=image.device)
    tiles = image_tiles(h, w, tile, overlap)
    bar = tqdm(total=len(tiles), desc=f"{w}x{h}", unit="tile", leave=False, disable=_quiet(progress, len(tiles)))
    for i in range(0, len(tiles), max(1, batch_size)):
        chunk = tiles[i : i + batch_size]
        batch = torch.cat([t.crop(image) for t in chunk]).to(device)
        result = fn(batch).float().to(image.device)
        for k, t in enumerate(chunk):
            wt = t.weight.to(image.device)
            t.crop(out).add_(result[k : k + 1] * wt)
            t.crop(weight).add_(wt)
        bar.update(len(chunk))
    bar.close()
    return out / weight
