"""Metrics by name, for the evaluation tables: how each is shown and how one image is scored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sapnet.metrics.full_reference import psnr, ssim
from sapnet.metrics.niqe import niqe
from sapnet.metrics.no_reference import brisque
from sapnet.metrics.piqe import piqe

__all__ = ["METRICS", "ImageMetric", "MetricSpec", "check_metrics"]


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


def _niqe(x: torch.Tensor, _: torch.Tensor | None) -> float:
    return niqe(x).item()


def _piqe(x: torch.Tensor, _: torch.Tensor | None) -> float:
    return piqe(x).item()


METRICS: dict[str, ImageMetric] = {
    "psnr": ImageMetric(MetricSpec("psnr", "PSNR", 2, True), True, _psnr),
    "ssim": ImageMetric(MetricSpec("ssim", "SSIM", 4, True), True, _ssim),
    "brisque": ImageMetric(MetricSpec("brisque", "BRISQUE", 2, False), False, _brisque),
    "niqe": ImageMetric(MetricSpec("niqe", "NIQE", 3, False), False, _niqe),
    "piqe": ImageMetric(MetricSpec("piqe", "PIQE", 2, False), False, _piqe),
}
"""Metrics by name: PSNR / SSIM (Y channel, MATLAB protocol) need a clean image; BRISQUE, NIQE and PIQE do not."""


def check_metrics(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming each unknown or unavailable metric in ``names``."""
    problems = [f"unknown metric {n!r}" for n in names if n not in METRICS]
    if problems:
        raise ValueError("; ".join(problems) + f". Available: {', '.join(METRICS)}")
