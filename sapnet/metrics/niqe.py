"""NIQE, the "completely blind" natural image quality evaluator of Mittal, Soundararajan and Bovik (IEEE SPL
2013); lower is better.

Our implementation of the MATLAB ``niqe`` release (LIVE) with its pristine model (the multivariate Gaussian of
36 features fitted on 125 pristine photos, shipped in ``niqe_model/``; see its ``NOTICE.md``), on the protocol
that the super-resolution and deraining literature report: the Y channel of MATLAB's ``rgb2ycbcr`` of the 8-bit
image, rounded to integers, 96x96 blocks without overlap, no border crop. It reproduces the per-image scores of
BasicSR's ``calculate_niqe`` (which matches MATLAB R2021a; the calibration tests check it on the real rainy
photos and Rain100L).

The method, on Y in [0, 255] (float64), cropped to whole 96x96 blocks:

1. MSCN coefficients (Y - mu) / (sigma + 1), mu and sigma^2 = |blur(Y^2) - mu^2| from the normalised 7x7 Gaussian
   (sigma 7/6) with replicated borders;
2. in each block, an asymmetric generalised Gaussian (AGGD) fit of the MSCN values and of their products with
   their right, lower, lower-right and lower-left neighbours (the block wrapping around, as ``np.roll``):
   shape alpha from the grid 0.2:0.001:10 nearest to the moment ratio, left / right scales beta from the
   values < 0 / > 0; features (alpha, (beta_l + beta_r) / 2) and per product (alpha, mean, beta_l, beta_r): 18;
3. the same on the image at half size (MATLAB ``imresize(.., 0.5)``: bicubic with antialiasing, symmetric
   borders), in 48x48 blocks: 36 features per block;
4. a Gaussian fitted to the blocks' features (mean ignoring NaNs, covariance over the blocks without NaN), and
   the score sqrt((mu_p - mu) ((C_p + C) / 2)^+ (mu_p - mu)^T) against the pristine model.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sapnet.metrics.full_reference import rgb_to_y
from sapnet.metrics.no_reference import _blur_valid as blur_valid
from sapnet.metrics.no_reference import _per_image

__all__ = ["NIQE", "NIQE_BLOCK", "niqe"]

MODEL_DIR = Path(__file__).resolve().parent / "niqe_model"

#: Side of the blocks at full size (the release's recommended value); images need two whole blocks.
NIQE_BLOCK = 96

_HALF = 3  # half width of the 7x7 window
# Pixels per strip of block rows: the strip's maps stay in the last-level cache (as for BRISQUE).
_STRIP_PIXELS = 1 << 18
# AGGD shape grid of the release: 0.2, 0.201, ..., 10.
_GRID_START, _GRID_STEP, _GRID_SIZE = 0.2, 0.001, 9801
# MATLAB imresize(.., 0.5), bicubic (a = -0.5) widened 2x for antialiasing: output j reads inputs 2j - 3 .. 2j + 4.
_HALF_TAPS = (-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875)


@functools.lru_cache(maxsize=4)
def _pristine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The pristine model: mean (36,) and covariance (36, 36), float64."""
    data = json.loads((MODEL_DIR / "pristine.json").read_text())
    mu = torch.tensor(data["mu"], dtype=torch.float64, device=device)
    cov = torch.tensor(data["cov"], dtype=torch.float64, device=device)
    return mu, cov


@functools.lru_cache(maxsize=4)
def _shape_grid(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's alpha grid and its moment ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) (increasing)."""
    alpha = _GRID_START + _GRID_STEP * torch.arange(_GRID_SIZE, dtype=torch.float64, device=device)
    ratio = torch.exp(2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))
    return alpha, ratio


def _nearest_alpha(r: torch.Tensor) -> torch.Tensor:
    """The grid alpha whose ratio is nearest to ``r`` (the first on a tie, alpha 0.2 for NaN, as ``argmin``)."""
    alpha, ratio = _shape_grid(r.device)
    hi = torch.searchsorted(ratio, r.nan_to_num(nan=-1.0)).clamp_(1, _GRID_SIZE - 1)
    lo = hi - 1
    index = torch.where((ratio[lo] - r) ** 2 <= (ratio[hi] - r) ** 2, lo, hi)
    return torch.where(r.isnan(), alpha[0], alpha[index])


def _aggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGGD fit of each row of (..., n) -> float64 alpha, beta_left, beta_right, each (...) (NaN betas where a
    side has no values: < 0 on the left, > 0 on the right). Sums are taken in the dtype of ``x``."""
    neg = x.clamp(max=0)
    n_neg = -neg.sign().sum(-1)  # sign sums count (several times faster than count_nonzero on the CPU)
    n_pos = x.sign().sum(-1) + n_neg
    sum_neg, total = neg.sum(-1), x.sum(-1)
    sq_neg, sq = torch.linalg.vecdot(neg, neg), torch.linalg.vecdot(x, x)
    n_neg, n_pos, sum_neg, total, sq_neg, sq = (v.double() for v in (n_neg, n_pos, sum_neg, total, sq_neg, sq))
    left, right = (sq_neg / n_neg).sqrt(), ((sq - sq_neg) / n_pos).sqrt()
    g = left / right
    n = x.shape[-1]
    r_hat = ((total - 2 * sum_neg) / n) ** 2 / (sq / n)
    alpha = _nearest_alpha(r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2)
    scale = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left * scale, right * scale


def _block_features(mscn: torch.Tensor, block: int) -> torch.Tensor:
    """(H, W) MSCN map of whole ``block`` x ``block`` blocks -> (blocks, 18) features."""
    h, w = mscn.shape
    b = mscn.reshape(h // block, block, w // block, block).transpose(1, 2).reshape(-1, block, block)
    up = b.roll(1, 1)  # each pixel's upper neighbour, the block wrapping around
    neighbours = (b.roll(1, 2), up, up.roll(1, 2), up.roll(-1, 2))  # left, up, upper-left, upper-right
    maps = torch.stack([b] + [b * n for n in neighbours])
    alpha, beta_l, beta_r = _aggd(maps.flatten(2))  # (5, blocks) each
    mean = (beta_r - beta_l) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
    products = torch.stack([alpha[1:], mean[1:], beta_l[1:], beta_r[1:]], 2)  # (4, blocks, 4)
    first = torch.stack([alpha[0], (beta_l[0] + beta_r[0]) / 2], 1)
    return torch.cat([first, products.transpose(0, 1).flatten(1)], 1)


def _mscn(y: torch.Tensor, top: int = _HALF, bottom: int = _HALF) -> torch.Tensor:
    """(H + 6 - top - bottom, W) float64 rows -> (H, W) float32 MSCN coefficients of the H rows in the middle:
    ``3 - top`` / ``3 - bottom`` rows of context are given above / below, the rest (the image border) and the
    sides are replicated.

    The filter sums are taken in float64 and rounded to float32, the rest is float32: the release's arithmetic.
    It matters on flat regions, where the rounding makes mu equal the pixel and the block all zeros (then left
    out of the fit as undefined) instead of leaving float64 residues of ~1e-14 with arbitrary statistics.
    """
    padded = F.pad(y[None, None], (_HALF, _HALF, top, bottom), mode="replicate")[0, 0]
    mu = blur_valid(padded).float()
    sq = blur_valid(padded * padded).float()
    sigma = (sq - mu * mu).abs_().sqrt_()
    centre = padded[_HALF : padded.shape[0] - _HALF, _HALF : padded.shape[1] - _HALF]
    return (centre.float() - mu) / (sigma + 1)


def _scale_features(y: torch.Tensor, block: int) -> torch.Tensor:
    """(blocks, 18) features of (H, W) float64 Y made of whole ``block`` x ``block`` blocks, a strip of block
    rows at a time (cache-sized work: 2.6x faster than whole maps on a 12-megapixel photo)."""
    h, w = y.shape
    step = block * max(1, _STRIP_PIXELS // (block * w))
    feats = []
    for r0 in range(0, h, step):
        r1 = min(r0 + step, h)
        a, b = max(r0 - _HALF, 0), min(r1 + _HALF, h)
        mscn = _mscn(y[a:b], _HALF - (r0 - a), _HALF - (b - r1))
        feats.append(_block_features(mscn, block))
    return torch.cat(feats)


def _matlab_half(x: torch.Tensor, dim: int) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)`` (bicubic, antialiased, symmetric borders) along ``dim``."""
    n = x.shape[dim]
    m = (n + 1) // 2
    right = 2 * m + 3 - n
    padded = torch.cat([x.narrow(dim, 0, 3).flip(dim), x, x.narrow(dim, n - right, right).flip(dim)], dim)
    out = padded.narrow(dim, 0, 2 * m - 1)[(slice(None),) * (dim % x.dim()) + (slice(None, None, 2),)]
    out = out * _HALF_TAPS[0]
    for k in range(1, len(_HALF_TAPS)):
        tap = padded.narrow(dim, k, 2 * m - 1)[(slice(None),) * (dim % x.dim()) + (slice(None, None, 2),)]
        out.add_(tap, alpha=_HALF_TAPS[k])
    return out


def _score(features: torch.Tensor) -> torch.Tensor:
    """(blocks, 36) features -> NIQE (0-d float64)."""
    mu_p, cov_p = _pristine(features.device)
    mu = features.nanmean(0)
    complete = features[~features.isnan().any(1)]
    cov = torch.cov(complete.T)
    d = (mu_p - mu)[None]
    return (d @ torch.linalg.pinv((cov_p + cov) / 2) @ d.T).squeeze().sqrt()


def _luma(x: torch.Tensor, data_range: float) -> torch.Tensor:
    """(C, H, W), C in {1, 3} -> (H, W) Y in [0, 255] of the 8-bit image, rounded (the release's input)."""
    if x.shape[0] == 3:
        return rgb_to_y(x, data_range)[0].round_()
    return (x[0].double() * (255.0 / data_range)).round()


def _check(x: torch.Tensor) -> None:
    if x.dim() != 3 or x.shape[0] not in (1, 3) or not x.is_floating_point():
        raise ValueError(f"expected float (3, H, W) or (1, H, W) images, got {x.dtype} {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if (h // NIQE_BLOCK) * (w // NIQE_BLOCK) < 2:
        raise ValueError(f"NIQE needs at least two whole {NIQE_BLOCK}x{NIQE_BLOCK} blocks, got a {w}x{h} (WxH) image")


def niqe(x: torch.Tensor | Sequence[torch.Tensor], data_range: float = 1.0) -> torch.Tensor:
    """NIQE per image (no reference; lower is better; about 2..10 on photos).

    Args:
        x: (N, 3, H, W) / (3, H, W) RGB or 1-channel gray floats in [0, ``data_range``], or a list of (3, H, W)
            images of any sizes (each at least 192x96 or 96x192: two 96x96 blocks). RGB is scored on the Y channel
            of MATLAB's ``rgb2ycbcr`` rounded to integers, as the release and the literature do.
        data_range: the value of white in ``x``.

    Returns:
        float64 (N,) per-image scores (a 0-d tensor for one (3, H, W) image). Not differentiable.

    Raises:
        ValueError: wrong shape or dtype, or an image smaller than two blocks.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> smooth = torch.linspace(0, 1, 192).repeat(3, 192, 1)
        >>> noisy = (smooth + 0.1 * torch.randn(3, 192, 192, generator=g)).clamp(0, 1)
        >>> scores = niqe([smooth + 0.02 * torch.randn(3, 192, 192, generator=g), noisy])
        >>> scores.shape, bool(scores[1] > scores[0])  # noise makes an image less natural
        (torch.Size([2]), True)
    """

    def score(image: torch.Tensor) -> torch.Tensor:
        _check(image)
        y = _luma(image, data_range)
        h, w = y.shape
        y = y[: h - h % NIQE_BLOCK, : w - w % NIQE_BLOCK]
        full = _scale_features(y, NIQE_BLOCK)
        small = _matlab_half(_matlab_half(y / 255.0, 0), 1) * 255.0
        return _score(torch.cat([full, _scale_features(small, NIQE_BLOCK // 2)], 1))

    return _per_image(x, score)


class NIQE(nn.Module):
    """Module form of :func:`niqe`: ``NIQE(data_range)(x)`` -> (N,) float64 scores, lower is better."""

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = float(data_range)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return niqe(x, self.data_range)

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}"
