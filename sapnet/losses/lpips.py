"""The LPIPS term of the SAPNet training loss, through the ``lpips`` package, differentiable."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lpips as _lpips_pkg
import torch
from torch import nn

from sapnet.hub import WeightsUnavailableError, load_state_dict_file
from sapnet.losses.backbones import LPIPS_NETS, BackboneMode, build_lpips_trunk, freeze

__all__ = ["LPIPSLoss", "build_lpips", "lpips_from_features", "lpips_loss"]


def _linear_weights_file(net: str, version: str) -> Path:
    """The calibrated linear-layer weights shipped inside the installed ``lpips`` package."""
    return Path(_lpips_pkg.__file__).resolve().parent / "weights" / f"v{version}" / f"{net}.pth"


def build_lpips(
    net: str = "vgg",
    *,
    backbone: BackboneMode = "imagenet",
    weight_file: str | os.PathLike[str] | None = None,
    version: str = "0.1",
    seed: int = 0,
) -> tuple[_lpips_pkg.LPIPS, str]:
    """An ``lpips.LPIPS`` metric, frozen, with its trunk from :func:`sapnet.losses.backbones.build_lpips_trunk`.

    ``lpips.LPIPS(pretrained=True)`` would build its trunk through torchvision with ImageNet weights (a download
    when they are not cached). Instead, the metric is constructed on the ``meta`` device with ``pnet_rand=True``
    (random trunk, nothing downloaded, nothing allocated), materialised on the CPU, and then filled with: the
    linear-layer weights shipped in the ``lpips`` package (``lpips/weights/v<version>/<net>.pth``, always
    available offline), the fixed input scaling constants, and the trunk weights from the chosen source
    (ImageNet, a local torchvision state-dict file, or seeded random).

    Returns:
        ``(metric, trunk_source)``; the metric is in eval mode and none of its parameters require grad.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    trunk, source = build_lpips_trunk(net, backbone, weight_file, seed)
    lin_file = _linear_weights_file(net, version)
    if not lin_file.is_file():
        raise WeightsUnavailableError(f"the LPIPS linear weights {lin_file} are missing from the lpips package")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation warnings about `pretrained=`
        metric = _lpips_pkg.LPIPS(pretrained=False, net=net, version=version, pnet_rand=True, verbose=False)
    metric = metric.to_empty(device="cpu")
    metric.scaling_layer = type(metric.scaling_layer)()  # its constant buffers, on the CPU
    missing, unexpected = metric.load_state_dict(load_state_dict_file(lin_file), strict=False)
    bad_missing = [k for k in missing if not k.startswith(("net.", "scaling_layer.", "lins."))]
    if unexpected or bad_missing:
        raise WeightsUnavailableError(
            f"the LPIPS linear weights {lin_file} do not fit: missing {bad_missing}, unexpected {unexpected}"
        )
    # The lpips trunk splits torchvision's `features` into slices that keep the layer indices as names.
    trunk_state = trunk.state_dict()
    mapped = {k: trunk_state[k.split(".", 1)[1]] for k in metric.net.state_dict()}
    metric.net.load_state_dict(mapped, strict=True)
    return freeze(metric), source


def lpips_loss(derained: torch.Tensor, clean: torch.Tensor, metric: _lpips_pkg.LPIPS) -> torch.Tensor:
    """LPIPS distance between ``derained`` and ``clean``, averaged over the batch, with gradient.

    The inputs are mapped from [0, 1] to [-1, 1] (what LPIPS expects). Unlike the reference SAPNet code, which
    converts the LPIPS value of the first image of the batch to a Python float (so the term adds a constant and
    no gradient), this is the batch mean as a tensor that back-propagates into ``derained``.

    Args:
        derained: (N, 3, H, W) float RGB in [0, 1], H, W >= 16 or so (five pooling stages of the trunk).
        clean: (N, 3, H, W) float RGB in [0, 1].
        metric: an ``lpips.LPIPS`` (see :func:`build_lpips`).

    Returns:
        A 0-d non-negative tensor (0 for identical images).
    """
    if derained.dim() != 4 or derained.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(derained.shape)}")
    if derained.shape != clean.shape:
        raise ValueError(f"shape mismatch: {tuple(derained.shape)} vs {tuple(clean.shape)}")
    return metric(derained * 2 - 1, clean * 2 - 1).mean()


def lpips_from_features(
    metric: _lpips_pkg.LPIPS, features0: Sequence[torch.Tensor], features1: Sequence[torch.Tensor]
) -> torch.Tensor:
    """The LPIPS distance per image, (N, 1, 1, 1), from trunk features already computed.

    The same arithmetic as ``lpips.LPIPS.forward`` (``lpips=True``, ``spatial=False``) after its trunk:
    per layer, unit-normalise the features over channels, square their difference, weight the channels with the
    calibrated linear layer and average over space; then sum the layers in order.

    Args:
        metric: the ``lpips.LPIPS`` whose linear layers are used (``metric.lpips`` true, ``metric.spatial`` false).
        features0: the trunk outputs (``metric.L`` tensors) of the first images (inputs scaled as LPIPS does).
        features1: the same for the second images.
    """
    if not metric.lpips or metric.spatial:
        raise ValueError("lpips_from_features needs an LPIPS metric with lpips=True and spatial=False")
    if not len(features0) == len(features1) == metric.L:
        raise ValueError(f"expected {metric.L} feature maps per image set, got {len(features0)} and {len(features1)}")
    val: torch.Tensor | int = 0
    for kk in range(metric.L):
        diff = (_lpips_pkg.normalize_tensor(features0[kk]) - _lpips_pkg.normalize_tensor(features1[kk])) ** 2
        val = val + metric.lins[kk](diff).mean([2, 3], keepdim=True)
    assert isinstance(val, torch.Tensor)
    return val


class LPIPSLoss(nn.Module):
    """Module form of :func:`lpips_loss`, owning a frozen LPIPS metric (:func:`build_lpips`).

    ``forward(derained, clean)`` -> 0-d loss. ``backbone_source`` tells where the trunk weights came from.
    The metric stays in eval mode even after ``.train()``.
    """

    def __init__(
        self,
        net: str = "vgg",
        *,
        backbone: BackboneMode = "imagenet",
        weight_file: str | os.PathLike[str] | None = None,
        version: str = "0.1",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.metric, self.backbone_source = build_lpips(
            net, backbone=backbone, weight_file=weight_file, version=version, seed=seed
        )
        self.net = net

    def train(self, mode: bool = True) -> LPIPSLoss:
        super().train(mode)
        self.metric.eval()
        return self

    def forward(self, derained: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return lpips_loss(derained, clean, self.metric)

    def extra_repr(self) -> str:
        return f"net={self.net!r}, backbone={self.backbone_source!r}"
