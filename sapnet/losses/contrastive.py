"""The perceptual contrastive loss of SAPNet: pull the derained image towards the clean one and away from the
rainy one in VGG-16 feature space."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from sapnet.hub import IMAGENET_MEAN, IMAGENET_STD
from sapnet.losses.backbones import BackboneMode, build_vgg16_features

__all__ = [
    "DEFAULT_LAYER_WEIGHTS",
    "VGG_LAYERS",
    "PerceptualContrastiveLoss",
    "VGGFeatures",
    "contrastive_from_features",
    "contrastive_loss",
]

VGG_LAYERS: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
"""The feature layers used, with their index in torchvision's ``vgg16().features``."""

DEFAULT_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4)
"""Weights of relu1_2, relu2_2, relu3_3, relu4_3. (The reference code also declares a fifth weight, 1, that is
never used because only four layers are extracted.)"""


class VGGFeatures(nn.Module):
    """Frozen VGG-16 truncated after relu4_3, returning relu1_2, relu2_2, relu3_3, relu4_3.

    Input: (N, 3, H, W) float RGB in [0, 1]; it is normalised with the ImageNet mean / std inside. Output: a list
    of four tensors (N, 64, H, W), (N, 128, H/2, W/2), (N, 256, H/4, W/4), (N, 512, H/8, W/8) (floored).
    The network stays in eval mode and its parameters never require grad; gradients flow to the input.

    Args:
        backbone: ``"imagenet"`` or ``"random"``, see :func:`sapnet.losses.backbones.build_vgg16_features`.
        weight_file: a local VGG-16 state dict (overrides ``backbone``).
        seed: seed of the random initialisation.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, backbone: BackboneMode = "imagenet", weight_file: str | os.PathLike[str] | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        features, self.source = build_vgg16_features(backbone, weight_file, seed)
        self.features = features[: max(VGG_LAYERS.values()) + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._taps = frozenset(VGG_LAYERS.values())

    def train(self, mode: bool = True) -> VGGFeatures:
        super().train(mode)
        self.features.eval()  # frozen: always eval
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self._taps:
                out.append(h)
        return out


def contrastive_loss(
    derained: torch.Tensor,
    clean: torch.Tensor,
    rainy: torch.Tensor,
    features: VGGFeatures,
    layer_weights: Sequence[float] = DEFAULT_LAYER_WEIGHTS,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Perceptual contrastive loss ``sum_i w_i L1(f_i(derained), f_i(clean)) / (L1(f_i(derained), f_i(rainy)) + eps)``.

    ``f_i`` are the VGG-16 features of :class:`VGGFeatures` (relu1_2, relu2_2, relu3_3, relu4_3), ``L1`` the mean
    absolute difference over all elements. The clean (positive) and rainy (negative) features are computed
    without gradient; the gradient flows only through the derained image.

    Args:
        derained: (N, 3, H, W) float RGB in [0, 1] (the network output), H, W >= 8.
        clean: (N, 3, H, W) float RGB in [0, 1], the positive.
        rainy: (N, 3, H, W) float RGB in [0, 1], the negative (the network input).
        features: the frozen feature extractor.
        layer_weights: one weight per layer (default 1/32, 1/16, 1/8, 1/4).
        eps: added to the denominator.

    Returns:
        A 0-d non-negative tensor; exactly 0 when ``derained`` equals ``clean``.
    """
    if derained.dim() != 4 or derained.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(derained.shape)}")
    if not derained.shape == clean.shape == rainy.shape:
        raise ValueError(
            f"shape mismatch: derained {tuple(derained.shape)}, clean {tuple(clean.shape)}, rainy {tuple(rainy.shape)}"
        )
    if len(layer_weights) != len(VGG_LAYERS):
        raise ValueError(f"expected {len(VGG_LAYERS)} layer weights, got {len(layer_weights)}")
    with torch.no_grad():
        fixed = features(torch.cat((clean, rainy)))
    return contrastive_from_features(features(derained), fixed, layer_weights, eps)


def contrastive_from_features(
    derained_features: Sequence[torch.Tensor],
    clean_rainy_features: Sequence[torch.Tensor],
    layer_weights: Sequence[float] = DEFAULT_LAYER_WEIGHTS,
    eps: float = 1e-7,
) -> torch.Tensor:
    """The sum of :func:`contrastive_loss` from VGG features already computed.

    Args:
        derained_features: the features of the N derained images (one tensor per layer, with gradient).
        clean_rainy_features: the features of ``cat((clean, rainy))`` (2N images; the clean ones first).
        layer_weights: one weight per layer.
        eps: added to the denominator.
    """
    n = derained_features[0].shape[0]
    total = derained_features[0].new_zeros(())
    for w, f_d, f_cr in zip(layer_weights, derained_features, clean_rainy_features, strict=True):
        f_c, f_r = f_cr[:n], f_cr[n:]
        total = total + w * (f_d - f_c).abs().mean() / ((f_d - f_r).abs().mean() + eps)
    return total


class PerceptualContrastiveLoss(nn.Module):
    """Module form of :func:`contrastive_loss`, owning its frozen :class:`VGGFeatures`.

    ``forward(derained, clean, rainy)`` -> 0-d loss. ``backbone_source`` says where the VGG weights came from
    (``"imagenet"``, ``"file:<path>"``, ``"random"``). Constructing with ``"imagenet"`` and no cached weights raises
    :class:`sapnet.losses.BackboneUnavailableError`.
    """

    def __init__(
        self,
        *,
        backbone: BackboneMode = "imagenet",
        weight_file: str | os.PathLike[str] | None = None,
        layer_weights: Sequence[float] = DEFAULT_LAYER_WEIGHTS,
        eps: float = 1e-7,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(layer_weights) != len(VGG_LAYERS):
            raise ValueError(f"expected {len(VGG_LAYERS)} layer weights, got {len(layer_weights)}")
        self.vgg = VGGFeatures(backbone, weight_file, seed)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.eps = float(eps)

    @property
    def backbone_source(self) -> str:
        return self.vgg.source

    def forward(self, derained: torch.Tensor, clean: torch.Tensor, rainy: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(derained, clean, rainy, self.vgg, self.layer_weights, self.eps)

    def extra_repr(self) -> str:
        return f"layer_weights={self.layer_weights}, eps={self.eps}, backbone={self.backbone_source!r}"
