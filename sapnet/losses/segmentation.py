"""Unsupervised background segmentation (UBS) loss of SAPNet.

A frozen segmentation network labels the derained image with its own arg-max prediction (pseudo-labels, no
gradient); the focal loss of its soft prediction against those labels is then minimised w.r.t. the derained
image, which pushes the derain network towards outputs that segment confidently.

Difference from the reference code: the reference implementation constructs the whole segmentation network
anew inside the training step, so its randomly initialised head (and, with random encoder weights, everything)
changes at every iteration. Here one network is built once per loss module, from a seed, and kept fixed for the
whole run (eval mode, no gradient to its parameters, never updated), which makes the term reproducible.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from sapnet.hub import IMAGENET_MEAN, IMAGENET_STD
from sapnet.losses.backbones import BackboneMode, build_segmentation_network

__all__ = ["UBSLoss", "focal_loss", "ubs_loss"]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Multi-class focal loss ``-(1 - p_t)^gamma * log(p_t)`` averaged over all pixels.

    Args:
        logits: (N, C, H, W) float class scores.
        target: (N, H, W) int64 class indices in [0, C).
        gamma: focusing parameter (0 gives the cross-entropy).

    Returns:
        A 0-d non-negative tensor, differentiable w.r.t. ``logits``.
    """
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits (N, C, H, W) and target (N, H, W), got {tuple(logits.shape)}, {tuple(target.shape)}"
        )
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def _segment(x: torch.Tensor, network: nn.Module, normalize: bool) -> torch.Tensor:
    """Logits (N, C, H, W) of ``network`` for ``x`` in [0, 1]; pads H, W up to the encoder's stride."""
    if normalize:
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
    stride = int(getattr(getattr(network, "encoder", None), "output_stride", 32))
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % stride, (-w) % stride
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return network(x)[..., :h, :w]


def ubs_loss(derained: torch.Tensor, network: nn.Module, gamma: float = 2.0, normalize: bool = True) -> torch.Tensor:
    """The UBS loss: focal loss of ``network``'s prediction on ``derained`` against its own arg-max.

    One forward pass with gradient; the pseudo-labels are the arg-max of the *detached* logits (no gradient
    flows through them), so the gradient reaches ``derained`` only through the class probabilities. The same
    result as labelling under ``torch.no_grad()`` and running a second forward with gradient.

    Args:
        derained: (N, 3, H, W) float RGB in [0, 1], any H, W (padded by edge replication up to a multiple of
            the encoder's output stride, logits cropped back).
        network: a frozen segmentation network returning (N, C, H', W') logits (see :class:`UBSLoss`).
        gamma: focal-loss focusing parameter (SAPNet: 2).
        normalize: apply ImageNet mean / std normalisation first (what the ImageNet encoder expects).

    Returns:
        A 0-d non-negative tensor.
    """
    if derained.dim() != 4 or derained.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(derained.shape)}")
    logits = _segment(derained, network, normalize)
    labels = logits.detach().argmax(dim=1)
    return focal_loss(logits, labels, gamma)


class UBSLoss(nn.Module):
    """Module form of :func:`ubs_loss`, owning one frozen segmentation network built at construction.

    The network is ``segmentation_models_pytorch`` ``arch`` (FPN by default) with ``classes`` outputs (21, the
    PASCAL VOC count used by SAPNet) and the encoder ``encoder`` (SAPNet: ``resnet101``), ImageNet-initialised
    (``backbone="imagenet"``), loaded from ``weight_file``, or random from ``seed``. The decoder / head
    convolutions are Gaussian-initialised, N(0, ``head_std``²) with zero biases, from ``seed``: same seed, same
    network. See :func:`sapnet.losses.backbones.build_segmentation_network`.

    ``forward(derained)`` -> 0-d loss. The network stays in eval mode even after ``.train()``. Unlike the reference
    code, which rebuilds the segmentation network (with a new random head) at every training step, this network
    is built once and stays fixed for the life of the module.
    """

    def __init__(
        self,
        arch: str = "FPN",
        encoder: str = "resnet101",
        *,
        classes: int = 21,
        backbone: BackboneMode = "imagenet",
        weight_file: str | os.PathLike[str] | None = None,
        head_std: float = 0.01,
        gamma: float = 2.0,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.network, self.backbone_source = build_segmentation_network(
            arch, encoder, classes=classes, mode=backbone, weight_file=weight_file, head_std=head_std, seed=seed
        )
        self.arch, self.encoder, self.classes = arch, encoder, classes
        self.gamma, self.normalize, self.head_std = float(gamma), bool(normalize), float(head_std)

    def train(self, mode: bool = True) -> UBSLoss:
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, derained: torch.Tensor) -> torch.Tensor:
        return ubs_loss(derained, self.network, self.gamma, self.normalize)

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, encoder={self.encoder!r}, classes={self.classes}, gamma={self.gamma}, "
            f"head_std={self.head_std}, backbone={self.backbone_source!r}"
        )
