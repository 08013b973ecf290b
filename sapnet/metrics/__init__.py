"""Image quality metrics for deraining evaluation (function + module pairs, torch, batched, any device).

Full reference, with the deraining literature's protocol as the default (MATLAB ``rgb2ycbcr`` luma on the
0..255 scale, unrounded, in float64; SSIM of Wang et al. over the valid region; one value per image, a data
set's figure being the per-image values averaged):

* :func:`psnr` / :class:`PSNR`, :func:`ssim` / :class:`SSIM`, with :func:`rgb_to_y` (the reference scripts'
  8-bit saving of a result before it is scored is :func:`sapnet.data.image.quantize_8bit` with ``"floor"``).

No reference (lower is better; calibrated against reference implementations' per-image scores):

* :func:`brisque` / :class:`BRISQUE`, the LIVE-trained SVR model of the ``brisque`` PyPI package, shipped in
  ``brisque_model/`` under its Apache-2.0 licence; :func:`brisque_features`;
* :func:`niqe` / :class:`NIQE`, the MATLAB ``niqe`` release's pristine model (``niqe_model/``), on the rounded Y
  channel in 96x96 blocks, as BasicSR's ``calculate_niqe`` (which matches MATLAB);
* :func:`piqe` / :class:`PIQE`, parameter free, as MATLAB's ``piqe`` (via its port ``pypiqe``).

Temporal (clips, lower is better; :mod:`sapnet.metrics.temporal`, optical flow from :mod:`sapnet.video`):

* :func:`warping_error` / :class:`WarpingError` (Lai et al. 2018), :func:`tof` / :class:`TOF` (Chu et al. 2020),
  :func:`flicker` / :class:`Flicker`, :func:`label_instability` / :class:`LabelInstability` (of label maps), each
  with a ``*_per_frame`` form.

By name, for tables: :data:`METRICS` (:class:`ImageMetric`: a :class:`MetricSpec` and a per-image function),
:func:`check_metrics`.
"""

from sapnet.metrics.full_reference import PSNR, SSIM, psnr, rgb_to_y, ssim
from sapnet.metrics.niqe import NIQE, NIQE_BLOCK, niqe
from sapnet.metrics.no_reference import BRISQUE, MIN_SIZE, brisque, brisque_features
from sapnet.metrics.piqe import PIQE, PIQE_BLOCK, piqe
from sapnet.metrics.registry import METRICS, ImageMetric, MetricSpec, check_metrics
from sapnet.metrics.temporal import (
    TOF,
    Flicker,
    LabelInstability,
    WarpingError,
    flicker,
    flicker_per_frame,
    label_instability,
    label_instability_per_frame,
    tof,
    tof_per_frame,
    warping_error,
    warping_error_per_frame,
)

__all__ = [
    "BRISQUE",
    "METRICS",
    "MIN_SIZE",
    "NIQE",
    "NIQE_BLOCK",
    "PIQE",
    "PIQE_BLOCK",
    "PSNR",
    "SSIM",
    "TOF",
    "Flicker",
    "ImageMetric",
    "LabelInstability",
    "MetricSpec",
    "WarpingError",
    "brisque",
    "brisque_features",
    "check_metrics",
    "flicker",
    "flicker_per_frame",
    "label_instability",
    "label_instability_per_frame",
    "niqe",
    "piqe",
    "psnr",
    "rgb_to_y",
    "ssim",
    "tof",
    "tof_per_frame",
    "warping_error",
    "warping_error_per_frame",
]
