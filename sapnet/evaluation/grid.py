"""Comparison grids: rows of images side by side with column titles, for a person to look at."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from sapnet.data.image import tensor_to_pil

__all__ = ["comparison_grid"]


def comparison_grid(
    rows: Sequence[Sequence[torch.Tensor]],
    titles: Sequence[str],
    cell_width: int = 320,
    gap: int = 4,
) -> Image.Image:
    """Lay out images in a grid, one row per example and one titled column per method.

    Args:
        rows: each row a sequence of float tensors (3, H, W) in [0, 1] (e.g. rainy, derained, clean); images
            of a row may differ in size from other rows.
        titles: one title per column, drawn above the first row.
        cell_width: every image is resized to this width, keeping its aspect ratio.
        gap: white pixels between cells.

    Returns:
        An RGB PIL image.
    """
    if not rows or any(len(r) != len(titles) for r in rows):
        raise ValueError("every row needs one image per title")
    resized = []
    for row in rows:
        h, w = row[0].shape[-2:]
        size = (max(1, round(h * cell_width / w)), cell_width)
        resized.append([F.interpolate(im[None].float(), size=size, mode="area")[0] for im in row])
    title_h = 18
    heights = [r[0].shape[-2] for r in resized]
    width = len(titles) * cell_width + (len(titles) + 1) * gap
    height = title_h + sum(heights) + (len(rows) + 1) * gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles):
        draw.text((gap + j * (cell_width + gap) + 4, 3), title, fill="black")
    y = title_h + gap
    for row, h in zip(resized, heights, strict=True):
        for j, im in enumerate(row):
            canvas.paste(tensor_to_pil(im), (gap + j * (cell_width + gap), y))
        y += h + gap
    return canvas
