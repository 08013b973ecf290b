"""Training logs: append-only CSV files, optional TensorBoard events and a PNG of the curves drawn with Pillow
(no matplotlib)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sapnet.files import atomic_write

__all__ = ["CsvLog", "TensorBoardLog", "plot_curves", "read_csv", "truncate_csv"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


class CsvLog:
    """Rows appended to a CSV file, flushed at once. An existing file (a resumed run) is appended to with its
    own header; keys not in the header are ignored, missing ones are left empty."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open(newline="", encoding="utf-8") as f:
                self.columns = next(csv.reader(f), list(columns))
        else:
            self.columns = list(columns)
            with self.path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(self.columns)

    def write(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.columns, restval="", extrasaction="ignore").writerow(
                {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
            )


def truncate_csv(path: str | os.PathLike[str], column: str, last: float) -> int:
    """Drop the rows of ``path`` whose ``column`` is above ``last`` (e.g. steps logged after the checkpoint a run
    resumes from); rows where it is not a number are kept. The file is rewritten atomically only if rows go.

    Returns:
        The number of rows dropped (0 for a missing file).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or column not in rows[0]:
        return 0
    i = rows[0].index(column)

    def keep(row: list[str]) -> bool:
        try:
            return float(row[i]) <= last
        except (IndexError, ValueError):
            return True

    kept = [rows[0], *(row for row in rows[1:] if keep(row))]
    dropped = len(rows) - len(kept)
    if dropped:
        with atomic_write(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(kept)
    return dropped


class TensorBoardLog:
    """Scalars written as TensorBoard events (``torch.utils.tensorboard``) into ``folder``, created at the first
    :meth:`write`.

    Args:
        folder: the event folder.
        purge_step: a resumed run's step: events of an earlier attempt after it are hidden by TensorBoard.

    Raises:
        ImportError: the ``tensorboard`` package is not installed (the message says how to install it).
    """

    def __init__(self, folder: str | os.PathLike[str], purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            message = f"TensorBoard logging needs the tensorboard package: pip install tensorboard ({e})"
            raise ImportError(message) from None
        self.folder = Path(folder)
        self._make = lambda: SummaryWriter(str(self.folder), purge_step=purge_step)
        self._writer: Any = None

    def write(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Add ``prefix/name`` = value for each of ``values`` at ``step``, flushed at once."""
        if self._writer is None:
            self._writer = self._make()
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (empty list if the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _series(rows: list[dict[str, str]], x: str, y: str) -> list[tuple[float, float]]:
    out = []
    for row in rows:
        try:
            a, b = float(row[x]), float(row[y])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(a) and math.isfinite(b):
            out.append((a, b))
    return out


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    xlabel: str,
    series: dict[str, list[tuple[float, float]]],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """Axes, ticks and polylines (markers for single points) of ``series`` inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    left, right, top, bottom = x0 + 60, x1 - 10, y0 + 25, y1 - 35
    draw.text((x0 + 60, y0 + 5), title, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")
    points = [p for s in series.values() for p in s]
    if not points:
        draw.text((left + 10, top + 10), "no data yet", fill="gray", font=font)
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xmin, xmax, ymin, ymax = min(xs), max(xs), min(ys), max(ys)
    if xmax == xmin:
        xmin, xmax = xmin - 1, xmax + 1
    if ymax == ymin:
        ymin, ymax = ymin - 0.5, ymax + 0.5
    pad = 0.05 * (ymax - ymin)
    ymin, ymax = ymin - pad, ymax + pad

    def to_px(p: tuple[float, float]) -> tuple[float, float]:
        return (
            left + (p[0] - xmin) / (xmax - xmin) * (right - left),
            bottom - (p[1] - ymin) / (ymax - ymin) * (bottom - top),
        )

    for i in range(5):
        fy = ymin + (ymax - ymin) * i / 4
        ty = bottom - (bottom - top) * i / 4
        draw.line((left - 4, ty, left, ty), fill="black")
        draw.text((x0 + 2, ty - 6), f"{fy:.4g}", fill="black", font=font)
        fx = xmin + (xmax - xmin) * i / 4
        tx = left + (right - left) * i / 4
        draw.line((tx, bottom, tx, bottom + 4), fill="black")
        draw.text((tx - 12, bottom + 6), f"{fx:.4g}", fill="black", font=font)
    draw.text(((left + right) // 2 - 15, bottom + 20), xlabel, fill="black", font=font)
    for k, (name, pts) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        px = [to_px(p) for p in pts]
        if len(px) > 1:
            draw.line(px, fill=color, width=2)
        for cx, cy in px if len(px) <= 50 else []:
            draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=color)
        draw.text((right - 110, top + 5 + 14 * k), name, fill=color, font=font)


_VAL_TITLES = {
    "psnr": ("validation PSNR (dB, Y)", "PSNR"),
    "real_score": ("held-out real photos: NR-IQA / rainy input (lower is better)", "score"),
}


def plot_curves(
    log_csv: str | os.PathLike[str],
    val_csv: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    loss_columns: Sequence[str],
    val_column: str = "psnr",
) -> Path:
    """Draw ``out_png`` (1000x400 RGB): the ``loss_columns`` of ``log_csv`` against ``step`` (left) and
    ``val_column`` of ``val_csv`` (``"psnr"``, or ``"real_score"`` for real-photo adaptation) against ``epoch``
    (right). Written atomically. Returns ``out_png``."""
    rows, val = read_csv(log_csv), read_csv(val_csv)
    image = Image.new("RGB", (1000, 400), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    losses = {c: s for c in loss_columns if (s := _series(rows, "step", c))}
    _panel(draw, (0, 0, 500, 400), "training loss (weighted total) and unweighted terms", "step", losses, font)
    title, label = _VAL_TITLES.get(val_column, (f"validation {val_column}", val_column))
    _panel(draw, (500, 0, 1000, 400), title, "epoch", {label: _series(val, "epoch", val_column)}, font)
    out_png = Path(out_png)
    with atomic_write(out_png) as tmp:
        image.save(tmp, format="PNG")
    return out_png
