"""The complete SAPNet training objective: SSIM + UBS + perceptual contrastive + LPIPS."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import cast

import torch
from torch import nn

from sapnet.hub import IMAGENET_MEAN, IMAGENET_STD
from sapnet.losses.backbones import WEIGHT_FILE_KEYS, BackboneMode, describe_source
from sapnet.losses.contrastive import PerceptualContrastiveLoss, contrastive_from_features
from sapnet.losses.lpips import LPIPSLoss, lpips_from_features
from sapnet.losses.segmentation import UBSLoss
from sapnet.losses.ssim import SSIMLoss

__all__ = ["LossWeights", "SAPNetLoss", "check_loss_options"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms of :class:`SAPNetLoss`. A weight of 0 disables the term and its network is
    not even built.

    Attributes:
        ssim: weight of ``1 - SSIM`` (SAPNet: 1).
        ubs: weight of the unsupervised background segmentation loss (SAPNet: 0.1).
        contrastive: weight of the perceptual contrastive loss (SAPNet: 0.1).
        lpips: weight of LPIPS (SAPNet: 0.1).
    """

    ssim: float = 1.0
    ubs: float = 0.1
    contrastive: float = 0.1
    lpips: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"loss weight {name} must be >= 0, got {value}")

    def active(self) -> tuple[str, ...]:
        """Names of the terms with a non-zero weight, in the order ssim, ubs, contrastive, lpips."""
        return tuple(name for name, value in asdict(self).items() if value > 0)


def check_loss_options(
    weights: LossWeights,
    backbones: str,
    weight_files: Mapping[str, str | os.PathLike[str]] | None,
    ubs_start_epoch: int,
) -> None:
    """Raise ``ValueError`` unless these :class:`SAPNetLoss` arguments can work (checked before any network is
    built): at least one active term, a known ``backbones`` mode and ``weight_files`` keys, ``ubs_start_epoch >= 0``.
    """
    if not weights.active():
        raise ValueError("all loss weights are 0: at least one term must be active")
    describe_source(cast(BackboneMode, backbones), None)  # validates `backbones`
    unknown = sorted(set(weight_files or {}) - set(WEIGHT_FILE_KEYS))
    if unknown:
        raise ValueError(f"unknown weight_files keys {unknown}; valid keys: {', '.join(WEIGHT_FILE_KEYS)}")
    if ubs_start_epoch < 0:
        raise ValueError(f"ubs_start_epoch must be >= 0, got {ubs_start_epoch}")


class SAPNetLoss(nn.Module):
    """``w_ssim (1 - SSIM) + w_ubs UBS + w_contrastive Contrastive + w_lpips LPIPS`` (SAPNet's objective).

    Args:
        weights: the term weights; terms with weight 0 are skipped and their networks not built.
        backbones: ``"imagenet"`` (default): the VGG-16, LPIPS trunk and segmentation encoder get ImageNet weights
            from the local caches (downloaded when missing and online); when they cannot be had,
            :class:`sapnet.losses.BackboneUnavailableError` is raised at construction, quickly. ``"random"``: they
            are randomly initialised from ``seed`` and a :class:`sapnet.losses.RandomBackboneWarning` is issued
            for each.
        seg_arch: segmentation-models-pytorch architecture of the UBS network (``"FPN"``).
        seg_encoder: its encoder (SAPNet: ``"resnet101"``).
        lpips_net: LPIPS trunk, ``"vgg"`` (default), ``"alex"`` or ``"squeeze"``.
        weight_files: local state-dict files that take precedence over ``backbones``, keys ``"vgg16"`` (the
            contrastive VGG-16), ``"lpips"`` (the LPIPS trunk; for ``lpips_net="vgg"`` the ``"vgg16"`` file is used
            when no ``"lpips"`` file is given) and ``"seg_encoder"`` (a state dict of the smp encoder).
        seed: seed of every random initialisation (random backbones, the Gaussian segmentation head).
        ubs_start_epoch: the UBS term is used from this epoch on (``epoch >= ubs_start_epoch``); 0 = always.
            The reference code only adds it after epoch 50.

    ``forward(derained, clean, rainy, epoch=0)`` returns ``(total, terms)``: ``total`` the weighted sum (0-d,
    differentiable w.r.t. ``derained``), ``terms`` the unweighted values of the terms used in this call, detached
    (keys among ``"ssim"``, ``"ubs"``, ``"contrastive"``, ``"lpips"``).

    The frozen networks are submodules (so ``.to(device)`` moves them) whose parameters never require grad; they
    stay in eval mode when ``.train()`` is called. :attr:`backbones_info` records the origin of each backbone.
    """

    def __init__(
        self,
        weights: LossWeights | None = None,
        *,
        backbones: BackboneMode = "imagenet",
        seg_arch: str = "FPN",
        seg_encoder: str = "resnet101",
        lpips_net: str = "vgg",
        weight_files: Mapping[str, str | os.PathLike[str]] | None = None,
        seed: int = 0,
        ubs_start_epoch: int = 0,
    ) -> None:
        super().__init__()
        self.weights = weights = weights if weights is not None else LossWeights()
        check_loss_options(weights, backbones, weight_files, ubs_start_epoch)
        files = dict(weight_files or {})
        self.backbones = backbones
        self.seed = seed
        self.ubs_start_epoch = int(ubs_start_epoch)
        self._info: dict[str, str] = {}

        self.ssim = SSIMLoss() if weights.ssim > 0 else None
        self.contrastive: PerceptualContrastiveLoss | None = None
        if weights.contrastive > 0:
            self.contrastive = PerceptualContrastiveLoss(backbone=backbones, weight_file=files.get("vgg16"), seed=seed)
            self._info["vgg16"] = self.contrastive.backbone_source
        self.lpips: LPIPSLoss | None = None
        if weights.lpips > 0:
            lpips_file = files.get("lpips", files.get("vgg16") if lpips_net == "vgg" else None)
            self.lpips = LPIPSLoss(lpips_net, backbone=backbones, weight_file=lpips_file, seed=seed)
            self._info["lpips"] = self.lpips.backbone_source
        self.ubs: UBSLoss | None = None
        if weights.ubs > 0:
            self.ubs = UBSLoss(
                seg_arch, seg_encoder, backbone=backbones, weight_file=files.get("seg_encoder"), seed=seed
            )
            self._info["seg_encoder"] = self.ubs.backbone_source
        self.shares_vgg = self._can_share_vgg()
        """Whether the contrastive and LPIPS terms share one VGG-16 pass (see :meth:`_can_share_vgg`)."""

    def _can_share_vgg(self) -> bool:
        """True when the contrastive VGG-16 and the LPIPS trunk are the same network on the same input.

        That is: both terms are active, the LPIPS trunk is VGG-16 with identical weights in its first four slices
        (relu1_2 .. relu4_3, layers 0-22: the same weights whatever their source, e.g. both ImageNet, or both
        random from the same seed), and LPIPS scales its input (``2x - 1`` then ``(. - shift) / scale``) exactly
        as the ImageNet normalisation of the contrastive VGG (``(x - mean) / std``). Then one VGG-16 pass on the
        derained images (and one no-grad pass on the clean and rainy ones) gives the features of both terms;
        LPIPS continues the relu4_3 features through its fifth slice. Otherwise the terms run separately.
        """
        if self.contrastive is None or self.lpips is None or self.lpips.net != "vgg":
            return False
        metric = self.lpips.metric
        if getattr(metric, "version", None) != "0.1" or not metric.lpips or metric.spatial or metric.L != 5:
            return False
        shift, scale = metric.scaling_layer.shift.flatten().double(), metric.scaling_layer.scale.flatten().double()
        mean, std = torch.tensor(IMAGENET_MEAN, dtype=torch.float64), torch.tensor(IMAGENET_STD, dtype=torch.float64)
        if not (
            torch.allclose((1 + shift) / 2, mean, rtol=0, atol=1e-6)
            and torch.allclose(scale / 2, std, rtol=0, atol=1e-6)
        ):
            return False
        vgg = self.contrastive.vgg.features.state_dict()
        trunk = {k: v for k, v in metric.net.state_dict().items() if not k.startswith("slice5.")}
        return len(trunk) == len(vgg) and all(
            (name := k.split(".", 1)[1]) in vgg and torch.equal(v, vgg[name]) for k, v in trunk.items()
        )

    def _contrastive_and_lpips(
        self, derained: torch.Tensor, clean: torch.Tensor, rainy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both terms from one shared VGG-16 pass (only when :attr:`shares_vgg`)."""
        assert self.contrastive is not None and self.lpips is not None
        vgg, metric = self.contrastive.vgg, self.lpips.metric
        n = derained.shape[0]
        with torch.no_grad():
            fixed = vgg(torch.cat((clean, rainy)))
            clean_features = [f[:n] for f in fixed]
            clean_features.append(metric.net.slice5(clean_features[-1]))
        derained_features = vgg(derained)
        contrastive = contrastive_from_features(
            derained_features, fixed, self.contrastive.layer_weights, self.contrastive.eps
        )
        lpips = lpips_from_features(
            metric, [*derained_features, metric.net.slice5(derained_features[-1])], clean_features
        ).mean()
        return contrastive, lpips

    @property
    def backbones_info(self) -> dict[str, str]:
        """Origin of each built backbone, for checkpoint metadata: keys among ``"vgg16"``, ``"lpips"``,
        ``"seg_encoder"``; values ``"imagenet"``, ``"file:<path>"`` or ``"random"``."""
        return dict(self._info)

    def forward(
        self, derained: torch.Tensor, clean: torch.Tensor, rainy: torch.Tensor, epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and the detached unweighted terms.

        Args:
            derained: (N, 3, H, W) float RGB, the network output (nominally [0, 1], not clamped).
            clean: (N, 3, H, W) float RGB in [0, 1], the ground truth.
            rainy: (N, 3, H, W) float RGB in [0, 1], the network input (the contrastive negative).
            epoch: the current epoch (0-based), compared with ``ubs_start_epoch``.

        Returns:
            ``(total, terms)``: ``total`` a 0-d float tensor with gradient; ``terms`` maps the name of each term
            used in this call to its unweighted 0-d detached value.
        """
        if derained.dim() != 4 or derained.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(derained.shape)}")
        if not derained.shape == clean.shape == rainy.shape:
            raise ValueError(
                f"shape mismatch: derained {tuple(derained.shape)}, clean {tuple(clean.shape)}, "
                f"rainy {tuple(rainy.shape)}"
            )
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if self.ssim is not None:
            terms["ssim"] = self.ssim(derained, clean)
        if self.ubs is not None and epoch >= self.ubs_start_epoch:
            terms["ubs"] = self.ubs(derained)
        if self.shares_vgg:
            terms["contrastive"], terms["lpips"] = self._contrastive_and_lpips(derained, clean, rainy)
        else:
            if self.contrastive is not None:
                terms["contrastive"] = self.contrastive(derained, clean, rainy)
            if self.lpips is not None:
                terms["lpips"] = self.lpips(derained, clean)
        if terms:
            total = sum(getattr(w, name) * value for name, value in terms.items())
        else:  # only UBS is enabled and it has not started yet: a zero that still back-propagates
            total = derained.sum() * 0.0
        assert isinstance(total, torch.Tensor)
        return total, {name: value.detach() for name, value in terms.items()}

    def extra_repr(self) -> str:
        return f"weights={self.weights}, ubs_start_epoch={self.ubs_start_epoch}, backbones={self.backbones_info}"
