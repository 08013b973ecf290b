"""BRISQUE, the no-reference image quality score of Mittal, Moorthy and Bovik (IEEE TIP 2012); lower is better.

This is our implementation of the pipeline of the ``brisque`` package on PyPI (rehanguha/brisque, 0.2.0), with
that package's LIVE-trained epsilon-SVR model, whose parameters ship with sapnet (see ``brisque_model/NOTICE.md``;
Apache-2.0). It reproduces that package's per-image scores, which are the reference figures used for this
project, to well within 1 BRISQUE point (the calibration tests check it). Its scores are not those of MATLAB's
built-in ``brisque`` (another model) nor of the LIVE C++/MATLAB release (``allmodel``, other features).

The pipeline, on float64 grayscale in [0, 1]:

1. gray = 0.2125 R + 0.7154 G + 0.0721 B (``skimage.color.rgb2gray``);
2. MSCN coefficients (gray - mu) / (sigma + 1/255), mu and sigma^2 = |blur(gray^2) - mu^2| from a normalised
   7x7 Gaussian (sigma 7/6) with zero padding ('same' size);
3. an asymmetric generalised Gaussian (AGGD) moment-matching fit of the MSCN map and of its four neighbour
   products (horizontal, vertical, two diagonals): shape alpha solving
   Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) = R_hat, left/right scales from the values < 0 / >= 0;
   features (alpha, (sl^2 + sr^2) / 2) for the MSCN map and (alpha, mean, sl^2, sr^2) for each product: 18;
4. the same at half size (bicubic, as OpenCV's ``resize(fx=0.5, INTER_CUBIC)``: a = -0.75, no antialiasing,
   replicated border): 36 features;
5. features scaled to [-1, 1] with the model's ranges, then the RBF-kernel SVR:
   ``sum_i coef_i exp(-gamma |x - sv_i|^2) - rho``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BRISQUE", "MIN_SIZE", "brisque", "brisque_features"]

MODEL_DIR = Path(__file__).resolve().parent / "brisque_model"

#: Smallest accepted height and width: the half-size scale then still holds a 7x7 window.
MIN_SIZE = 14

_GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)
_MSCN_C = 1.0 / 255.0
_WINDOW = 7
_WINDOW_SIGMA = 7.0 / 6.0
_HALF_WINDOW = _WINDOW // 2
# |MSCN| below this is checked for a flat (constant) 7x7 window; real structure gives >= ~1e-8.
_FLAT_CANDIDATE = 1e-9
# Pixels per strip on the CPU: large enough that each operation splits well over threads, small enough that the
# strip's float64 maps stay in the last-level cache (measured best on the 2-core CPU among 2^15 .. 2^18).
_STRIP_PIXELS = 1 << 18
# OpenCV's bicubic weights (a = -0.75) at the half-pixel offset that a 2x downscale samples: taps at 2j-1 .. 2j+2.
_CUBIC_HALF = (-0.09375, 0.59375)
# Range of the AGGD shape search (table look-up, then Newton); the ratio function is increasing in alpha.
_ALPHA_LO, _ALPHA_HI, _NEWTON_STEPS = 1e-2, 1e2, 3


@dataclass(frozen=True)
class _SVR:
    support_vectors: np.ndarray  # (S, 36)
    coef: np.ndarray  # (S,)
    rho: float
    gamma: float
    feature_min: np.ndarray  # (36,)
    feature_max: np.ndarray  # (36,)


@functools.lru_cache(maxsize=1)
def _load_model() -> _SVR:
    """Parse the libsvm text model (``svm.txt``) and the feature ranges (``range.json``)."""
    header: dict[str, str] = {}
    coef: list[float] = []
    rows: list[dict[int, float]] = []
    with open(MODEL_DIR / "svm.txt", encoding="ascii") as f:
        for line in f:
            if line.strip() == "SV":
                break
            key, _, value = line.strip().partition(" ")
            header[key] = value
        for line in f:
            parts = line.split()
            if not parts:
                continue
            coef.append(float(parts[0]))
            rows.append({int(i): float(v) for i, v in (p.split(":") for p in parts[1:])})
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise RuntimeError(f"unexpected BRISQUE model type: {header}")
    ranges = json.loads((MODEL_DIR / "range.json").read_text(encoding="ascii"))
    n_features = len(ranges["min"])
    sv = np.zeros((len(rows), n_features))
    for r, row in enumerate(rows):  # libsvm's sparse format leaves zero entries out
        for i, v in row.items():
            sv[r, i - 1] = v
    if len(rows) != int(header["total_sv"]):
        raise RuntimeError(f"BRISQUE model: {len(rows)} support vectors, header says {header['total_sv']}")
    return _SVR(
        support_vectors=sv,
        coef=np.asarray(coef),
        rho=float(header["rho"]),
        gamma=float(header["gamma"]),
        feature_min=np.asarray(ranges["min"], dtype=np.float64),
        feature_max=np.asarray(ranges["max"], dtype=np.float64),
    )


def _gaussian_taps() -> tuple[float, ...]:
    """Normalised 7-tap Gaussian (sigma 7/6); the 2-D window is its outer product with itself."""
    g = [math.exp(-((i - _HALF_WINDOW) ** 2) / (2 * _WINDOW_SIGMA**2)) for i in range(_WINDOW)]
    total = math.fsum(g)
    return tuple(v / total for v in g)


_TAPS = _gaussian_taps()


@functools.lru_cache(maxsize=1)
def _reference_window() -> tuple[float, ...]:
    """The 49 weights of the 2-D window as the reference builds it (a 2-D Gaussian normalised by its NumPy
    sum), row-major; only used to reproduce its rounding on flat regions (:func:`_flat_mscn`)."""
    y, x = np.indices((_WINDOW, _WINDOW)) - _HALF_WINDOW
    k = 1 / (2 * np.pi * _WINDOW_SIGMA**2) * np.exp(-(x**2 + y**2) / (2 * _WINDOW_SIGMA**2))
    return tuple((k / np.sum(k)).ravel().tolist())


def _flat_mscn(values: torch.Tensor) -> torch.Tensor:
    """MSCN coefficient at the centre of a constant 7x7 window of each value in ``values``, rounded as the
    reference's direct 2-D filter rounds it (a sum of 49 products in row-major order).

    There the exact answer is 0 and the computed one is a rounding residue (~1e-12) whose *sign* decides on
    which side of the AGGD fits these pixels and their neighbour products fall; saturated skies make that
    matter by up to ~0.7 BRISQUE points.
    """
    v = values.double()
    v2 = v * v
    mu = torch.zeros_like(v)
    s2 = torch.zeros_like(v)
    for w in _reference_window():  # separate multiply and add: no fused multiply-add
        mu = mu + v * w
        s2 = s2 + v2 * w
    return (v - mu) / ((mu * mu - s2).abs().sqrt() + _MSCN_C)


def _blur_valid(x: torch.Tensor) -> torch.Tensor:
    """'valid' 7x7 Gaussian filter of (H + 6, W + 6) -> (H, W), float64, by symmetric shift-and-add passes."""
    for dim in (1, 0):
        n = x.shape[dim] - 2 * _HALF_WINDOW
        out = x.narrow(dim, _HALF_WINDOW, n) * _TAPS[_HALF_WINDOW]
        for k in range(_HALF_WINDOW):
            out.add_(x.narrow(dim, k, n) + x.narrow(dim, 2 * _HALF_WINDOW - k, n), alpha=_TAPS[k])
        x = out
    return x


def _mscn_padded(gp: torch.Tensor) -> torch.Tensor:
    """MSCN coefficients (H, W) from a gray block (H + 6, W + 6) that carries 3 rows / columns of context
    (image or zero padding) on each side."""
    mu = _blur_valid(gp)
    sigma = _blur_valid(gp * gp).sub_(mu * mu).abs_().sqrt_().add_(_MSCN_C)
    h, w = mu.shape
    c = (gp[_HALF_WINDOW : _HALF_WINDOW + h, _HALF_WINDOW : _HALF_WINDOW + w] - mu).div_(sigma)
    # Flat windows: the reference's rounding residue instead of ours (see _flat_mscn).
    cand = (c.abs() < _FLAT_CANDIDATE).flatten().nonzero().flatten()
    if cand.numel():
        i, j = cand // w, cand % w
        offsets = torch.arange(_WINDOW, device=gp.device)
        rows = (i[:, None] + offsets)[:, :, None]
        cols = (j[:, None] + offsets)[:, None, :]
        windows = gp[rows, cols].flatten(1)  # (K, 49)
        centre = windows[:, _WINDOW * _HALF_WINDOW + _HALF_WINDOW]
        flat = (windows == centre[:, None]).all(1)
        if flat.any():
            values, inverse = torch.unique(centre[flat], return_inverse=True)
            c.view(-1)[cand[flat]] = _flat_mscn(values)[inverse]
    return c


def _sums(y: torch.Tensor) -> torch.Tensor:
    """(6,) running sums of a map: count, sum, sum of negatives, sum of squares, of negatives' squares, and
    count of negatives (values < 0 form the AGGD's left side, values >= 0 its right)."""
    y = y.reshape(-1)
    left = y.clamp(max=0)
    return torch.stack(
        [
            torch.tensor(float(y.numel()), dtype=y.dtype, device=y.device),
            y.sum(),
            left.sum(),
            torch.dot(y, y),
            torch.dot(left, left),
            -left.sign().sum(),  # count of negatives (several times faster than count_nonzero on the CPU)
        ]
    )


def _moments(s: torch.Tensor) -> torch.Tensor:
    """(..., 6) sums -> (..., 4): mean |y|, mean y^2, left mean square, right mean square."""
    n, total, neg, sq, sq_neg, n_neg = s.unbind(-1)
    return torch.stack([(total - 2 * neg) / n, sq / n, sq_neg / n_neg, (sq - sq_neg) / (n - n_neg)], -1)


def _strip_rows(width: int, device: torch.device) -> int:
    return max(16, (_STRIP_PIXELS if device.type == "cpu" else 64 * _STRIP_PIXELS) // width)


def _scale_sums(
    rows: Callable[[int, int], torch.Tensor], h: int, w: int, device: torch.device, keep: list[torch.Tensor] | None
) -> torch.Tensor:
    """(5, 6) sums of the MSCN map and of its horizontal, vertical, main- and secondary-diagonal neighbour
    products for an image of ``h`` x ``w`` whose gray rows ``[a, b)`` come from ``rows(a, b)``, processed in
    strips of rows (cache-sized work on the CPU). With ``keep``, each strip's own rows are appended to it."""
    step = _strip_rows(w, device)
    p = _HALF_WINDOW
    acc = torch.zeros(5, 6, dtype=torch.float64, device=device)
    for r0 in range(0, h, step):
        r1 = min(r0 + step, h)
        m1 = min(r1 + 1, h)  # MSCN rows [r0, m1): one more row for the vertical and diagonal products
        a, b = max(r0 - p, 0), min(m1 + p, h)
        g = rows(a, b)
        if keep is not None:
            keep.append(g[r0 - a : r1 - a])
        c = _mscn_padded(F.pad(g, (p, p, a - (r0 - p), (m1 + p) - b)))
        k = min(r1, h - 1) - r0
        own = c[: r1 - r0]
        up, down = c[:k], c[1 : k + 1]
        maps = (own, own[:, :-1] * own[:, 1:], up * down, up[:, :-1] * down[:, 1:], down[:, :-1] * up[:, 1:])
        acc += torch.stack([_sums(m) for m in maps])
    return acc


def _half(x: torch.Tensor, dim: int) -> torch.Tensor:
    """2x bicubic downscale along ``dim`` as OpenCV computes it (output length rounded half to even)."""
    n, m = x.shape[dim], round(x.shape[dim] / 2)
    # Replicated border: one sample before, two after; output j then reads padded samples 2j .. 2j + 3.
    padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1).expand_as(x.narrow(dim, 0, 2))], dim)
    index: list[slice] = [slice(None)] * x.dim()

    def tap(k: int) -> torch.Tensor:
        index[dim] = slice(k, k + 2 * m - 1, 2)
        return padded[tuple(index)]

    a, b = _CUBIC_HALF
    # OpenCV's order of operations, so that flat regions round as they do there: ((s0 a + s1 b) + s2 b) + s3 a.
    return (tap(0) * a).add_(tap(1) * b).add_(tap(2) * b).add_(tap(3) * a)


def _gray_rows(x: torch.Tensor, data_range: float) -> Callable[[int, int], torch.Tensor]:
    """Rows ``[a, b)`` of the float64 gray image in [0, 1] of one (C, H, W) image (C = 3 RGB or 1 gray)."""
    r, g, b = _GRAY_WEIGHTS

    def rows(start: int, stop: int) -> torch.Tensor:
        block = x[:, start:stop].double()
        if data_range != 1.0:
            block = block / data_range
        if block.shape[0] == 1:
            return block[0]
        return (block[0] * r).add_(block[1] * g).add_(block[2] * b)

    return rows


def _image_sums(x: torch.Tensor, data_range: float) -> torch.Tensor:
    """(10, 6) sums (5 maps x 2 scales) of one (C, H, W) image."""
    _, h, w = x.shape
    strips: list[torch.Tensor] = []
    full = _scale_sums(_gray_rows(x, data_range), h, w, x.device, strips)
    # Half size: horizontal pass strip by strip, then the vertical one.
    small = _half(torch.cat([_half(s, 1) for s in strips]), 0)
    del strips
    half = _scale_sums(lambda a, b: small[a:b], small.shape[0], small.shape[1], x.device, None)
    return torch.cat([full, half])


def _log_phi(alpha: torch.Tensor) -> torch.Tensor:
    """log of Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), increasing from -inf (a -> 0) to log(3/4) (a -> inf)."""
    return 2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)


@functools.lru_cache(maxsize=8)
def _phi_table(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    log_alpha = torch.linspace(math.log(_ALPHA_LO), math.log(_ALPHA_HI), 4097, dtype=torch.float64, device=device)
    return log_alpha, _log_phi(log_alpha.exp())


def _solve_alpha(r: torch.Tensor) -> torch.Tensor:
    """alpha with phi(alpha) = r: table look-up, then Newton steps on log phi; clamped to [1e-2, 1e2]."""
    log_alpha, table = _phi_table(r.device)
    target = r.log()
    i = torch.searchsorted(table, target).clamp_(1, table.numel() - 1)
    t = ((target - table[i - 1]) / (table[i] - table[i - 1])).clamp_(0, 1)
    alpha = (log_alpha[i - 1] + t * (log_alpha[i] - log_alpha[i - 1])).exp()
    inside = (target > table[0]) & (target < table[-1])
    for _ in range(_NEWTON_STEPS):
        f = _log_phi(alpha) - target
        inv = 1 / alpha
        df = (torch.digamma(inv) + 3 * torch.digamma(3 * inv) - 4 * torch.digamma(2 * inv)) * inv * inv
        alpha = torch.where(inside, (alpha - f / df).clamp(_ALPHA_LO, _ALPHA_HI), alpha)
    return alpha


def _aggd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGGD moment-matching fit from (..., 4) moments -> alpha, mean, left and right variances."""
    mean_abs, mean_sq, var_l, var_r = m.unbind(-1)
    sl, sr = var_l.sqrt(), var_r.sqrt()
    gam = sl / sr
    r_hat = mean_abs**2 / mean_sq
    big_r = r_hat * (gam**3 + 1) * (gam + 1) / (gam**2 + 1) ** 2
    alpha = _solve_alpha(big_r)
    lg1, lg2, lg3 = torch.lgamma(1 / alpha), torch.lgamma(2 / alpha), torch.lgamma(3 / alpha)
    mean = (sr - sl) * torch.exp(0.5 * (lg1 - lg3) + lg2 - lg1)
    return alpha, mean, var_l, var_r


def _features_from_moments(m: torch.Tensor) -> torch.Tensor:
    """(B, 10, 4) moments (5 maps x 2 scales) -> (B, 36) features."""
    alpha, mean, var_l, var_r = _aggd(m)
    feats = []
    for s in (0, 5):
        feats += [alpha[:, s : s + 1], ((var_l[:, s] + var_r[:, s]) / 2)[:, None]]
        feats.append(torch.stack([alpha, mean, var_l, var_r], 2)[:, s + 1 : s + 5].flatten(1))
    return torch.cat(feats, 1)


def _per_image(x: torch.Tensor | Sequence[torch.Tensor], score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``score`` (one (C, H, W) image -> 0-d float64) of each image of a batch (N, C, H, W), a list, or one
    (C, H, W) image: (N,) float64, or 0-d for one image; (0,) for an empty list."""
    single = isinstance(x, torch.Tensor) and x.dim() == 3
    images: list[torch.Tensor] = [x] if isinstance(x, torch.Tensor) and single else list(x)
    out = torch.stack([score(image.detach()) for image in images]) if images else torch.empty(0, dtype=torch.float64)
    return out[0] if single else out


def _check(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (C, H, W), C in {1, 3}, float, at least MIN_SIZE -> (N, C, H, W)."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 3, H, W), (3, H, W) or 1-channel images, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating point tensor, got {x.dtype}")
    h, w = x.shape[-2:]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"BRISQUE needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {w}x{h}")
    return x


def _features_batch(x: torch.Tensor, data_range: float) -> torch.Tensor:
    sums = torch.stack([_image_sums(image, data_range) for image in _check(x)])
    feats = _features_from_moments(_moments(sums))
    bad = (~torch.isfinite(feats).all(1)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"BRISQUE is undefined for image(s) {bad} of the batch: no texture to fit (e.g. a constant image, "
            "or one whose normalised coefficients all have one sign)"
        )
    return feats


@torch.no_grad()
def brisque_features(x: torch.Tensor | Sequence[torch.Tensor], data_range: float = 1.0) -> torch.Tensor:
    """The 36 BRISQUE features per image (before scaling), float64 (N, 36).

    ``x``: RGB (N, 3, H, W) or (3, H, W) (or 1-channel gray) float tensor in [0, ``data_range``], or a sequence
    of (3, H, W) tensors of different sizes (processed one by one). Images must be at least ``MIN_SIZE`` pixels
    on each side.

    Raises:
        ValueError: too small, or an image without texture (a constant image has undefined features).
    """
    if isinstance(x, torch.Tensor):
        return _features_batch(x, data_range)
    if len(x) == 0:
        raise ValueError("brisque: empty sequence of images")
    return torch.cat([_features_batch(im, data_range) for im in x])


def _predict(features: torch.Tensor) -> torch.Tensor:
    model = _load_model()
    dev = features.device
    lo = torch.from_numpy(model.feature_min).to(dev)
    hi = torch.from_numpy(model.feature_max).to(dev)
    sv = torch.from_numpy(model.support_vectors).to(dev)
    coef = torch.from_numpy(model.coef).to(dev)
    scaled = -1 + 2 * (features - lo) / (hi - lo)
    d2 = (scaled[:, None, :] - sv[None]).square().sum(-1)
    return torch.exp(-model.gamma * d2) @ coef - model.rho


@torch.no_grad()
def brisque(x: torch.Tensor | Sequence[torch.Tensor], data_range: float = 1.0) -> torch.Tensor:
    """BRISQUE score per image (no reference; lower is better; roughly 0..100 on natural photos).

    Args:
        x: RGB images (N, 3, H, W) or (3, H, W) (1-channel gray is taken as the gray image), float, values in
            [0, ``data_range``]; or a sequence of (3, H, W) tensors of different sizes (processed one by one).
            At least ``MIN_SIZE`` (14) pixels on each side. The input's device is used.
        data_range: the value of white (1 for [0, 1] tensors, 255 for 0..255 ones).

    Returns:
        float64 (N,) per-image scores (a 0-d tensor for one (3, H, W) image). Not differentiable.

    Raises:
        ValueError: an image smaller than ``MIN_SIZE``, or without texture (e.g. constant), for which the
            features are undefined (the reference package would return an arbitrary number).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> images = torch.rand(2, 3, 64, 64, generator=g)
        >>> scores = brisque(images)
        >>> scores.shape, scores.dtype
        (torch.Size([2]), torch.float64)
    """
    feats = brisque_features(x, data_range)
    scores = _predict(feats)
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        return scores[0]
    return scores


class BRISQUE(nn.Module):
    """Module form of :func:`brisque`: ``BRISQUE(data_range)(x)`` -> (N,) float64 scores, lower is better."""

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = data_range

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return brisque(x, self.data_range)

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}"
