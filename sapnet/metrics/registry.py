"""Metrics by name, for the evaluation tables: how each is shown and how one image is scored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sapnet.metrics.full_reference import psnr, ssim
from sapnet.metrics.no_reference import brisque

__all__ = ["METRICS", "UNAVAILABLE_METRICS", "ImageMetric", "MetricSpec", "check_metrics"]


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is shown in a table: its key, column label, decimals and direction."""

    key: str
    label: str
    decimals: int
    higher_is_better: bool


@dataclass(frozen=True)
class ImageMetric:
    """A per-image metric: ``fn(output, clean)`` on float (3, H, W) in [0, 1] -> a number; ``paired``: it needs
    the clean image (``clean`` is ``None`` for the others)."""

    spec: MetricSpec
    paired: bool
    fn: Callable[[torch.Tensor, torch.Tensor | None], float]


def _psnr(x: torch.Tensor, y: torch.Tensor | None) -> float:
    assert y is not None
    return psnr(x[None], y[None]).item()


def _ssim(x: torch.Tensor, y: torch.Tensor | None) -> float:
    assert y is not None
    return ssim(x[None], y[None]).item()


def _brisque(x: torch.Tensor, _: torch.Tensor | None) -> float:
    return brisque(x[None]).item()


METRICS: dict[str, ImageMetric] = {
    "psnr": ImageMetric(MetricSpec("psnr", "PSNR", 2, True), True, _psnr),
    "ssim": ImageMetric(MetricSpec("ssim", "SSIM", 4, True), True, _ssim),
    "brisque": ImageMetric(MetricSpec("brisque", "BRISQUE", 2, False), False, _brisque),
}
"""Metrics by name: PSNR / SSIM (Y channel, MATLAB protocol) need a clean image; BRISQUE does not."""

UNAVAILABLE_METRICS: dict[str, str] = {
    "niqe": "NIQE is not provided: its published implementations disagree with one another and there are no "
    "reference scores here to calibrate ours against (see sapnet.metrics)",
}
"""Metrics that users may ask for and that are deliberately left out, with the reason."""


def check_metrics(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming each unknown or unavailable metric in ``names``."""
    problems = [UNAVAILABLE_METRICS.get(n, f"unknown metric {n!r}") for n in names if n not in METRICS]
    if problems:
        raise ValueError("; ".join(problems) + f". Available: {', '.join(METRICS)}")
