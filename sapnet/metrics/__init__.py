"""Image quality metrics for deraining evaluation (function + module pairs, torch, batched, any device).

Full reference, with the deraining literature's protocol as the default (MATLAB ``rgb2ycbcr`` luma on the
0..255 scale, unrounded, in float64; SSIM of Wang et al. over the valid region; one value per image, a data
set's figure being the per-image values averaged):

* :func:`psnr` / :class:`PSNR`, :func:`ssim` / :class:`SSIM`, with :func:`rgb_to_y` (the reference scripts'
  8-bit saving of a result before it is scored is :func:`sapnet.data.image.quantize_8bit` with ``"floor"``).

No reference:

* :func:`brisque` / :class:`BRISQUE` (lower is better), the LIVE-trained SVR model of the ``brisque`` PyPI
  package, shipped in ``brisque_model/`` under its Apache-2.0 licence; :func:`brisque_features`.

NIQE is deliberately not provided: no reference scores exist here to calibrate an implementation against, and
the published implementations disagree with one another (MATLAB's built-in model vs. the LIVE release's
pristine parameters, and different patch selection and resizing), so a number from us could not be shown to be
the literature's.
"""

from sapnet.metrics.full_reference import PSNR, SSIM, psnr, rgb_to_y, ssim
from sapnet.metrics.no_reference import BRISQUE, MIN_SIZE, brisque, brisque_features

__all__ = [
    "BRISQUE",
    "MIN_SIZE",
    "PSNR",
    "SSIM",
    "brisque",
    "brisque_features",
    "psnr",
    "rgb_to_y",
    "ssim",
]
