"""Training losses of SAPNet: SSIM, unsupervised background segmentation (UBS), perceptual contrastive, LPIPS,
and their weighted combination :class:`SAPNetLoss`.

Each loss exists as a function (taking its frozen network as an argument when it needs one) and as a module
(owning that network). Pretrained backbones and their offline behaviour: :mod:`sapnet.losses.backbones`.
"""

from sapnet.losses.backbones import (
    WEIGHT_FILE_KEYS,
    BackboneMode,
    BackboneUnavailableError,
    RandomBackboneWarning,
)
from sapnet.losses.combined import LossWeights, SAPNetLoss
from sapnet.losses.contrastive import PerceptualContrastiveLoss, VGGFeatures, contrastive_loss
from sapnet.losses.lpips import LPIPSLoss, build_lpips, lpips_loss
from sapnet.losses.segmentation import UBSLoss, focal_loss, ubs_loss
from sapnet.losses.ssim import SSIMLoss, ssim_loss

__all__ = [
    "WEIGHT_FILE_KEYS",
    "BackboneMode",
    "BackboneUnavailableError",
    "LPIPSLoss",
    "LossWeights",
    "PerceptualContrastiveLoss",
    "RandomBackboneWarning",
    "SAPNetLoss",
    "SSIMLoss",
    "UBSLoss",
    "VGGFeatures",
    "build_lpips",
    "contrastive_loss",
    "focal_loss",
    "lpips_loss",
    "ssim_loss",
    "ubs_loss",
]
