"""PIQE, the perception-based image quality evaluator of Venkatanath N. et al. (NCC 2015); parameter free,
0 (best) .. 100 (worst).

Our implementation of MATLAB's ``piqe`` as its Python port ``pypiqe`` (1.2) computes it, whose per-image scores
it reproduces (``benchmarks/reference/``; the calibration tests check it):

1. gray = OpenCV's 8-bit ``COLOR_RGB2GRAY`` (0.299 R + 0.587 G + 0.114 B in 14-bit fixed point), padded
   symmetrically to whole 16x16 blocks, stretched to ``round(255 gray / max(gray))``;
2. MSCN coefficients (gray - mu) / (sigma + 1), mu and sigma^2 = |blur(gray^2) - mu^2| from the normalised
   7x7 Gaussian (sigma 7/6) with replicated borders;
3. per 16x16 block: it is *active* when the variance of its coefficients exceeds 0.1; an active block shows a
   *noticeable artifact* when one of the 11 runs of 6 pixels along any of its four edges has a standard
   deviation below 0.1, and *noise* when sigma > 2 beta, beta = |sigma - r| / max(sigma, r) with r the ratio of
   the standard deviations of the centre columns (8 and 9, 1-based) and of the rest (the block without columns
   8 and 10: MATLAB's two successive deletions);
4. score = 100 (1 + sum over active blocks of [artifact] (1 - var) + [noise] var) / (1 + active blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sapnet.metrics.no_reference import _blur_valid as blur_valid
from sapnet.metrics.no_reference import _per_image

__all__ = ["PIQE", "PIQE_BLOCK", "piqe"]

#: Side of the analysed blocks.
PIQE_BLOCK = 16

_ACTIVITY = 0.1  # block variance above which a block is spatially active
_FLAT_EDGE = 0.1  # std of an edge run below which the block shows a noticeable artifact
_RUN = 6  # pixels per edge run
_HALF = 3  # half width of the 7x7 window
# OpenCV's RGB -> gray for 8-bit images: (R 4899 + G 9617 + B 1868 + 2^13) >> 14.
_GRAY_FIXED = (4899, 9617, 1868)


def _gray(x: torch.Tensor, data_range: float) -> torch.Tensor:
    """(C, H, W) in [0, ``data_range``] -> (H, W) float64 8-bit gray (C = 3: OpenCV's fixed-point weights)."""
    q = (x * (255.0 / data_range)).round_().clamp_(0, 255).int()  # exact in float32 for 8-bit values
    if q.shape[0] == 1:
        return q[0].double()
    r, g, b = _GRAY_FIXED
    return ((q[0] * r + q[1] * g + q[2] * b + (1 << 13)) >> 14).double()


def _pad_symmetric(y: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Pad (H, W) at the bottom and right by mirroring with the edge repeated (``np.pad(mode="symmetric")``)."""
    if bottom:
        y = torch.cat([y, y[-bottom:].flip(0)], 0)
    if right:
        y = torch.cat([y, y[:, -right:].flip(1)], 1)
    return y


def _std(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    return x.var(dim, correction=1).sqrt()


def _score(y: torch.Tensor) -> torch.Tensor:
    """(H, W) float64 8-bit gray -> 0-d PIQE."""
    h, w = y.shape
    y = _pad_symmetric(y, -h % PIQE_BLOCK, -w % PIQE_BLOCK)
    peak = y.max()
    if peak <= 0:
        raise ValueError("PIQE is undefined for an all-black image")
    y = (255 * (y / peak)).round()
    padded = F.pad(y[None, None], (_HALF,) * 4, mode="replicate")[0, 0]
    mu = blur_valid(padded)
    sigma = (blur_valid(padded * padded) - mu * mu).abs_().sqrt_()
    norm = (y - mu) / (sigma + 1)
    n = PIQE_BLOCK
    hb, wb = norm.shape[0] // n, norm.shape[1] // n
    blocks = norm.reshape(hb, n, wb, n).transpose(1, 2).reshape(-1, n, n)
    var = blocks.var((1, 2), correction=1)
    active = var > _ACTIVITY

    edges = torch.stack([blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]], 1)  # (B, 4, n)
    runs = edges.unfold(2, _RUN, 1)  # (B, 4, n - 5, 6)
    artifact = (_std(runs, 3) < _FLAT_EDGE).flatten(1).any(1)

    c1, c2 = n // 2 - 1, n // 2  # 0-based centre columns 7 and 8
    centre = blocks[:, :, c1 : c2 + 1]
    keep = [j for j in range(n) if j not in (c1, c2 + 1)]  # MATLAB deletes column 8, then (shifted) column 10
    ratio = (_std(centre, (1, 2)) / _std(blocks[:, :, keep], (1, 2))).nan_to_num(nan=0.0)
    block_sigma = var.sqrt()
    beta = (block_sigma - ratio).abs() / torch.maximum(block_sigma, ratio)
    noise = block_sigma > 2 * beta

    distortion = torch.where(artifact, 1 - var, 0.0) + torch.where(noise, var, 0.0)
    total = (distortion * active).sum()
    return 100 * (total + 1) / (active.sum() + 1)


def piqe(x: torch.Tensor | Sequence[torch.Tensor], data_range: float = 1.0) -> torch.Tensor:
    """PIQE per image (no reference, no model; 0 best .. 100 worst).

    Args:
        x: (N, 3, H, W) / (3, H, W) RGB or 1-channel gray floats in [0, ``data_range``] (scored as the 8-bit
            image they round to), or a list of (3, H, W) images of any sizes (at least 16x16).
        data_range: the value of white in ``x``.

    Returns:
        float64 (N,) per-image scores (a 0-d tensor for one (3, H, W) image). Not differentiable.

    Raises:
        ValueError: wrong shape or dtype, an image smaller than one block, or an all-black image.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> image = torch.rand(3, 64, 64, generator=g)
        >>> scores = piqe(torch.stack([image, image]))
        >>> scores.shape, bool(0 <= scores[0] <= 100), bool(scores[0] == scores[1])
        (torch.Size([2]), True, True)
    """

    def score(image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 3 or image.shape[0] not in (1, 3) or not image.is_floating_point():
            raise ValueError(f"expected float (3, H, W) or (1, H, W) images, got {image.dtype} {tuple(image.shape)}")
        if min(image.shape[-2:]) < PIQE_BLOCK:
            raise ValueError(
                f"PIQE needs at least {PIQE_BLOCK}x{PIQE_BLOCK} pixels, got {image.shape[-1]}x{image.shape[-2]} (WxH)"
            )
        return _score(_gray(image, data_range))

    return _per_image(x, score)


class PIQE(nn.Module):
    """Module form of :func:`piqe`: ``PIQE(data_range)(x)`` -> (N,) float64 scores, lower is better."""

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = float(data_range)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return piqe(x, self.data_range)

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}"
