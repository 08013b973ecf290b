"""The SSIM training loss (the negative-SSIM term of SAPNet / PReNet), through ``pytorch_msssim``."""

from __future__ import annotations

import torch
from pytorch_msssim import ssim as _ssim
from torch import nn

__all__ = ["SSIMLoss", "ssim_loss"]


def _check_pair(derained: torch.Tensor, clean: torch.Tensor) -> None:
    if derained.dim() != 4 or derained.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(derained.shape)}")
    if derained.shape != clean.shape:
        raise ValueError(f"shape mismatch: {tuple(derained.shape)} vs {tuple(clean.shape)}")


def ssim_loss(derained: torch.Tensor, clean: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 - SSIM(derained, clean)``, SSIM averaged over the batch, channels and pixels.

    The papers (PReNet, SAPNet) write the loss as ``-SSIM``; ``1 - SSIM`` differs by a constant, so it has the
    same gradients, and it is 0 for identical images (SSIM is at most 1), which reads better in logs.

    SSIM is ``pytorch_msssim.ssim`` with its defaults (11x11 Gaussian window, sigma 1.5, K1 = 0.01,
    K2 = 0.03, valid filtering, per-channel on RGB). Note it differs from the evaluation SSIM of
    :mod:`sapnet.metrics` (luma, MATLAB protocol).

    Args:
        derained: (N, 3, H, W) float RGB, nominally in [0, ``data_range``] (not clamped, gradient flows);
            H and W of at least 11.
        clean: (N, 3, H, W) float RGB in [0, ``data_range``], the target.
        data_range: the value of white (1 for [0, 1] tensors).

    Returns:
        A 0-d tensor in the inputs' dtype, in [0, 2] (0 for identical images), differentiable w.r.t. both.
    """
    _check_pair(derained, clean)
    return 1.0 - _ssim(derained, clean, data_range=data_range, size_average=True)


class SSIMLoss(nn.Module):
    """Module form of :func:`ssim_loss`: ``forward(derained, clean)`` -> 0-d ``1 - SSIM``. No parameters."""

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = float(data_range)

    def forward(self, derained: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return ssim_loss(derained, clean, self.data_range)

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}"
