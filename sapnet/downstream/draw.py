"""Predictions drawn on images, for the downstream comparison grids."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image, ImageDraw

from sapnet.data.image import pil_to_tensor, tensor_to_pil
from sapnet.downstream.targets import IGNORE_INDEX, BoxTargets, Detections

__all__ = ["draw_boxes", "draw_labels", "palette"]


def palette(n: int) -> np.ndarray:
    """``n`` distinct colours, uint8 (n, 3): hues spread by the golden ratio, class 0 (background) dark grey."""
    colours = [(64, 64, 64)]
    for i in range(1, n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return np.asarray(colours[:n], dtype=np.uint8).reshape(n, 3)


def _resized(image: torch.Tensor, width: int) -> tuple[Image.Image, float]:
    pil = tensor_to_pil(image)
    scale = width / pil.width
    return pil.resize((width, max(1, round(pil.height * scale))), Image.Resampling.BILINEAR), scale


def draw_boxes(
    image: torch.Tensor,
    boxes: Detections | BoxTargets,
    categories: Mapping[int, str],
    *,
    width: int = 320,
    min_score: float = 0.3,
) -> torch.Tensor:
    """The image resized to ``width`` with its boxes: one colour per category, ``name score`` labels.

    Args:
        image: float (3, H, W) in [0, 1].
        boxes: detections (those with ``score >= min_score`` are drawn) or ground truth (all drawn).
        categories: category id -> name.

    Returns:
        float (3, H', width) in [0, 1].
    """
    pil, scale = _resized(image, width)
    draw = ImageDraw.Draw(pil)
    if isinstance(boxes, Detections):
        shown = boxes.above(min_score)
        scores = [f" {s:.2f}" for s in shown.scores.tolist()]
        items = zip(shown.boxes.tolist(), shown.labels.tolist(), scores, strict=True)
    else:
        items = zip(boxes.boxes.tolist(), boxes.labels.tolist(), [""] * len(boxes), strict=True)
    colours = palette(max(categories, default=0) + 2)
    for box, label, score in items:
        colour = tuple(int(c) for c in colours[min(label, len(colours) - 1)])
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text = f"{categories.get(label, label)}{score}"
        left, top, right, bottom = draw.textbbox((x1 + 2, y1 + 1), text)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
        draw.text((x1 + 2, y1 + 1), text, fill="black")
    return pil_to_tensor(pil)


def draw_labels(
    image: torch.Tensor, labels: torch.Tensor, num_classes: int, *, width: int = 320, alpha: float = 0.55
) -> torch.Tensor:
    """The image resized to ``width`` under a colour map of ``labels`` (int (H, W) class ids; ignored pixels,
    :data:`~sapnet.downstream.targets.IGNORE_INDEX`, left uncoloured). Returns float (3, H', width) in [0, 1]."""
    pil, _ = _resized(image, width)
    ids = labels.cpu().numpy().astype(np.int64)
    colours = np.concatenate([palette(num_classes), np.zeros((1, 3), np.uint8)])
    index = np.where((ids >= 0) & (ids < num_classes), ids, num_classes)
    overlay = Image.fromarray(colours[index]).resize(pil.size, Image.Resampling.NEAREST)
    weight = Image.fromarray(np.where(ids == IGNORE_INDEX, 0, round(255 * alpha)).astype(np.uint8))
    pil.paste(overlay, (0, 0), weight.resize(pil.size, Image.Resampling.NEAREST))
    return pil_to_tensor(pil)
