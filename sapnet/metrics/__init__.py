"""Image quality metrics for deraining evaluation (function + module pairs, torch, batched, any device).

Full reference, with the deraining literature's protocol as the default (MATLAB ``rgb2ycbcr`` luma on the
0..255 scale, unrounded, in float64; SSIM of Wang et al. over the valid region; one value per image, a data
set's figure being the per-image values averaged):

* :func:`psnr` / :class:`PSNR`, :func:`ssim` / :class:`SSIM`, with :func:`rgb_to_y` and :func:`quantize`
  (the reference scripts' 8-bit saving of a result before it is scored).

No reference:

* :func:`brisque` / :class:`BRISQUE` (lower is better), the LIVE-trained SVR model of the ``brisque`` PyPI
  package, shipped in ``brisque_model/`` under its Apache-2.0 licence; :func:`brisque_features`.

NIQE is deliberately not provided: no reference scores exist here to calibrate an implementation against, and
the published implementations disagree with one another (MATLAB's built-in model vs. the LIVE release's
pristine parameters, and different patch selection and resizing), so a number from us could not be shown to be
the literature's.

By name, for tables: :data:`METRICS` (:class:`ImageMetric`: a :class:`MetricSpec` and a per-image function),
:func:`check_metrics`.
"""

from sapnet.metrics.full_reference import PSNR, SSIM, psnr, quantize, rgb_to_y, ssim
from sapnet.metrics.no_reference import BRISQUE, MIN_SIZE, brisque, brisque_features
from sapnet.metrics.registry import METRICS, UNAVAILABLE_METRICS, ImageMetric, MetricSpec, check_metrics

__all__ = [
    "BRISQUE",
    "METRICS",
    "MIN_SIZE",
    "PSNR",
    "SSIM",
    "UNAVAILABLE_METRICS",
    "ImageMetric",
    "MetricSpec",
    "brisque",
    "brisque_features",
    "check_metrics",
    "psnr",
    "quantize",
    "rgb_to_y",
    "ssim",
]
