"""Optical flow between frames, backward warping with it, and the forward-backward occlusion check.

Conventions, throughout the package:

* a flow is a float32 tensor (2, H, W) (or (N, 2, H, W)) in pixels: channel 0 the horizontal displacement
  ``u`` (positive to the right), channel 1 the vertical one ``v`` (positive downwards);
* the flow *from a to b* maps each pixel ``p`` of ``a`` to where it is in ``b``: ``a(p) ~ b(p + flow(p))``;
* pixel ``(x, y)`` is the centre of column ``x`` and row ``y``, so a frame spans ``[0, W - 1] x [0, H - 1]``.

So ``warp(b, optical_flow(a, b))`` is ``b`` brought into ``a``'s frame: close to ``a`` wherever what ``a`` shows is
visible in ``b``, and :func:`consistency_mask` says where that is.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CONSISTENCY_ALPHA",
    "CONSISTENCY_BETA",
    "LUMA_WEIGHTS",
    "consistency_mask",
    "luma_8bit",
    "optical_flow",
    "warp",
]

CONSISTENCY_ALPHA = 0.01
"""Relative tolerance of the forward-backward check (Sundaram et al., ECCV 2010; Ruder et al., GCPR 2016)."""

CONSISTENCY_BETA = 0.5
"""Absolute tolerance of the forward-backward check, in squared pixels (same sources)."""

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G and B, as OpenCV's RGB2GRAY (:func:`luma_8bit`)."""


def luma_8bit(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of a float RGB image (3, H, W) in [0, 1] (a 1-channel (1, H, W)
    one is taken as luma already), on the 0..255 scale, clamped and rounded: a uint8 (H, W) tensor on the CPU."""
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3, H, W) RGB or (1, H, W) gray image, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a float image in [0, 1], got {x.dtype}")
    x = x.detach().to("cpu", torch.float32)
    y = x[0] if x.shape[0] == 1 else torch.tensordot(torch.tensor(LUMA_WEIGHTS), x, dims=1)
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)


def optical_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dense optical flow from frame ``a`` to frame ``b`` (see the module's conventions): (2, H, W) float32 on
    ``a``'s device, in pixels.

    ``a``, ``b``: float (3, H, W) RGB (or (1, H, W) gray) in [0, 1], of one size. The flow is OpenCV's DIS
    (Kroeger et al., ECCV 2016) with its MEDIUM preset, on the 8-bit luma of each frame (:func:`luma_8bit`);
    it is computed on the CPU. Not differentiable.
    """
    if a.shape != b.shape:
        raise ValueError(f"frames must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    import cv2

    dis = cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_MEDIUM)
    out = np.zeros((*a.shape[-2:], 2), np.float32)  # the output (DIS starts from it only if told to)
    flow = np.asarray(dis.calc(luma_8bit(a).numpy(), luma_8bit(b).numpy(), out))  # (H, W, 2) float32, (u, v)
    return torch.from_numpy(flow).permute(2, 0, 1).contiguous().to(a.device)


def _batched(x: torch.Tensor, channels: int | None, name: str) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        x = x[None]
        single = True
    elif x.dim() == 4:
        single = False
    else:
        raise ValueError(f"{name}: expected a (C, H, W) or (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels at dim -3, got shape {tuple(x.shape)}")
    return x, single


def warp(
    image: torch.Tensor, flow: torch.Tensor, mode: Literal["bilinear", "nearest"] = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward warping: ``out(p) = image(p + flow(p))``, bilinear (``mode="nearest"``: the nearest pixel's value,
    for label maps stored as floats), and where those samples are in the frame.

    ``image``: float (C, H, W) or (N, C, H, W), any C; ``flow``: (2, H, W) or (N, 2, H, W) in pixels (moved to
    ``image``'s device and dtype). With ``flow`` the flow from frame ``a`` to ``image``, ``out`` is ``image``
    seen from ``a``.

    Returns ``(out, valid)``: ``out`` of ``image``'s shape and dtype; ``valid`` bool (1, H, W) or (N, 1, H, W),
    ``False`` where ``p + flow(p)`` lies outside the frame ``[0, W - 1] x [0, H - 1]``. There ``out`` holds the
    border values (the sample position clamped to the frame, ``grid_sample``'s ``"border"`` padding), which
    are not ``image``'s content at that position: mask them out. Differentiable in ``image`` and (bilinear)
    ``flow``.
    """
    img, single = _batched(image, None, "image")
    fl, _ = _batched(flow, 2, "flow")
    if not img.is_floating_point():
        raise TypeError(f"image: expected a float tensor, got {image.dtype}")
    if fl.shape[0] != img.shape[0] or fl.shape[-2:] != img.shape[-2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    fl = fl.to(img.device, img.dtype)
    h, w = img.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=img.device, dtype=img.dtype),
        torch.arange(w, device=img.device, dtype=img.dtype),
        indexing="ij",
    )
    x = xs + fl[:, 0]
    y = ys + fl[:, 1]
    valid = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    # align_corners=True: -1 and 1 are the centres of the first and last pixels (a 1-pixel side maps to 0)
    gx = 2 * x / max(w - 1, 1) - 1
    gy = 2 * y / max(h - 1, 1) - 1
    grid = torch.stack((gx, gy), dim=-1)
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    out = F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=True)
    valid = valid[:, None]
    return (out[0], valid[0]) if single else (out, valid)


def consistency_mask(
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor,
    alpha: float = CONSISTENCY_ALPHA,
    beta: float = CONSISTENCY_BETA,
) -> torch.Tensor:
    """Where the flow from ``a`` to ``b`` is confirmed by the flow back: ``True`` for pixels of ``a`` visible in ``b``.

    ``flow_fw``: flow from ``a`` to ``b``, ``flow_bw``: from ``b`` to ``a``, each (2, H, W) or (N, 2, H, W) in
    pixels. With ``f = flow_fw(p)`` and ``g = flow_bw(p + f)`` (:func:`warp`), a pixel passes when

        ``|f + g|^2 <= alpha * (|f|^2 + |g|^2) + beta``

    (going there and back returns to ``p``, within a tolerance that grows with the motion; defaults
    :data:`CONSISTENCY_ALPHA` = 0.01 and :data:`CONSISTENCY_BETA` = 0.5 px^2 as Sundaram et al. 2010 and Ruder et
    al. 2016) and ``p + f`` is inside the frame. Pixels that fail are occluded in ``b`` (or the flow is wrong
    there). Returns bool (1, H, W) or (N, 1, H, W) on ``flow_fw``'s device.
    """
    fw, single = _batched(flow_fw, 2, "flow_fw")
    bw, _ = _batched(flow_bw, 2, "flow_bw")
    if fw.shape != bw.shape:
        raise ValueError(f"flow_fw {tuple(flow_fw.shape)} and flow_bw {tuple(flow_bw.shape)} differ in shape")
    fw = fw.float()
    g, inside = warp(bw.to(fw.device, fw.dtype), fw)
    lhs = (fw + g).square().sum(dim=1, keepdim=True)
    rhs = alpha * (fw.square().sum(dim=1, keepdim=True) + g.square().sum(dim=1, keepdim=True)) + beta
    mask = (lhs <= rhs) & inside
    return mask[0] if single else mask
