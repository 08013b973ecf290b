"""Robust PCA: a matrix split into a low-rank part and a sparse part, by inexact augmented Lagrange multipliers.

``D = L + S`` minimising ``||L||_* + lam * ||S||_1`` (principal component pursuit, Candès et al., "Robust Principal
Component Analysis?", J. ACM 2011), solved as in Lin, Chen and Ma, "The Augmented Lagrange Multiplier Method for
Exact Recovery of Corrupted Low-Rank Matrices" (2010), the inexact variant: one singular value thresholding of
``L`` and one soft thresholding of ``S`` per iteration, with a growing penalty ``mu``.

Used by the ``lowrank`` mode of :class:`sapnet.video.VideoDerainer`: a column per frame of a window of frames
aligned to its centre; the static background is low-rank, rain (new in every frame) is sparse.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["RPCA_MAX_ITER", "RPCA_TOL", "RobustPCA", "robust_pca", "singular_value_threshold"]

RPCA_TOL = 1e-4
"""Default stopping tolerance of :func:`robust_pca`: ``||D - L - S||_F / ||D||_F`` below it. On windows of video
frames, 1e-4, 1e-5 and 1e-6 give the same derained frames to 0.01 dB; 1e-4 needs about half the iterations."""

RPCA_MAX_ITER = 100
"""Default iteration limit of :func:`robust_pca` (with the penalty growing 1.5x per iteration, the default
tolerance is reached in about 10 to 20 iterations on windows of frames)."""


class RobustPCA(NamedTuple):
    """What :func:`robust_pca` returns: ``low_rank + sparse`` is the input to within ``tol``."""

    low_rank: torch.Tensor
    sparse: torch.Tensor
    iterations: int
    converged: bool


def singular_value_threshold(m: torch.Tensor, tau: float) -> torch.Tensor:
    """``U diag(max(sigma - tau, 0)) V^T`` for ``m = U diag(sigma) V^T``, the proximal step of ``tau * ||.||_*``.

    ``m``: a float (rows, cols) matrix with ``cols`` small (a few frames): the SVD comes from the eigenvectors of
    the (cols, cols) Gram matrix ``m^T m`` (its eigenvalues are ``sigma^2``; computed in float64), so the cost is
    two (rows, cols) x (cols, cols) products, ``O(rows * cols^2)``, never a decomposition of ``m`` itself. Returns
    a matrix of ``m``'s shape and dtype.
    """
    gram = (m.T @ m).double()
    evals, vecs = torch.linalg.eigh(gram)
    sigma = evals.clamp(min=0).sqrt()
    keep = sigma > tau
    scale = torch.where(keep, (sigma - tau) / torch.where(keep, sigma, 1.0), 0.0)
    # m V = U diag(sigma), so U diag(shrunk) V^T = m V diag(shrunk / sigma) V^T
    project = (vecs * scale) @ vecs.T
    return m @ project.to(m.dtype)


def robust_pca(
    d: torch.Tensor,
    lam: float | None = None,
    *,
    tol: float = RPCA_TOL,
    max_iter: int = RPCA_MAX_ITER,
    rho: float = 1.5,
) -> RobustPCA:
    """Split ``d`` into low-rank plus sparse: ``argmin ||L||_* + lam ||S||_1`` subject to ``L + S = d``.

    Args:
        d: a float (m, n) matrix on any device (computed there, in its dtype), ``n`` small (the Gram trick of
            :func:`singular_value_threshold`).
        lam: weight of the sparse part; ``None``: ``1 / sqrt(max(m, n))``, the value for which Candès et al.
            prove exact recovery.
        tol: stop when ``||d - L - S||_F <= tol * ||d||_F``.
        max_iter: iteration limit (then ``converged`` is ``False``; the parts are still the last iterate).
        rho: growth of the penalty ``mu`` per iteration (from ``1.25 / ||d||_2``, capped at ``1e7`` times that).

    Returns:
        :class:`RobustPCA` ``(low_rank, sparse, iterations, converged)``, the parts of ``d``'s shape and dtype.
    """
    if d.dim() != 2:
        raise ValueError(f"robust_pca needs an (m, n) matrix, got shape {tuple(d.shape)}")
    if not d.is_floating_point():
        raise TypeError(f"robust_pca needs a float matrix, got {d.dtype}")
    if max_iter < 1 or tol <= 0 or rho <= 1:
        raise ValueError(f"need max_iter >= 1, tol > 0 and rho > 1, got {max_iter}, {tol}, {rho}")
    m, n = d.shape
    lam = 1 / math.sqrt(max(m, n)) if lam is None else lam
    if lam <= 0:
        raise ValueError(f"lam must be positive, got {lam}")
    norm_fro = float(torch.linalg.vector_norm(d))
    low = torch.zeros_like(d)
    sparse = torch.zeros_like(d)
    if norm_fro == 0:
        return RobustPCA(low, sparse, 0, True)
    norm_two = math.sqrt(float(torch.linalg.eigvalsh((d.T @ d).double())[-1].clamp(min=0)))
    norm_inf = float(d.abs().max())
    dual = d / max(norm_two, norm_inf / lam)  # a dual point: ||Y||_2 <= 1 and ||Y||_inf <= lam
    mu = 1.25 / max(norm_two, 1e-12)
    mu_max = mu * 1e7
    for iteration in range(1, max_iter + 1):
        low = singular_value_threshold(torch.sub(d, sparse).add_(dual, alpha=1 / mu), 1 / mu)
        r = torch.sub(d, low).add_(dual, alpha=1 / mu)
        sparse = r - r.clamp(-lam / mu, lam / mu)  # soft thresholding: sign(r) max(|r| - lam / mu, 0)
        residual = r.sub_(sparse).sub_(dual, alpha=1 / mu)  # d - low - sparse, in r's memory
        dual.add_(residual, alpha=mu)
        mu = min(mu * rho, mu_max)
        if float(torch.linalg.vector_norm(residual)) <= tol * norm_fro:
            return RobustPCA(low, sparse, iteration, True)
    return RobustPCA(low, sparse, max_iter, False)
