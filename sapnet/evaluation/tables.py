"""Result tables of both benchmarks, written as Markdown, CSV and JSON (``table.md``, ``table.csv``,
``table.json``), and the per-image CSV written row by row.

Two layouts: :func:`records_table`, rows = methods and columns = dataset x metric (image quality, one
:class:`Record` per method and dataset); :func:`scores_table`, rows = metrics and columns = versions of the
images (the downstream benchmark, SAPNet's Table 5). Both are drawn by :func:`markdown_table`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sapnet.metrics import MetricSpec

__all__ = [
    "PerImageWriter",
    "Record",
    "format_value",
    "markdown_table",
    "records_table",
    "scores_table",
    "write_records",
    "write_tables",
]

ARROWS = {True: "↑", False: "↓"}


@dataclass
class Record:
    """Mean scores of one method on one dataset over ``n`` images; ``skipped`` lists (image, reason)."""

    method: str
    dataset: str
    n: int = 0
    values: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``{"method", "dataset", "n", <metric>: mean, ..., "skipped": count}`` (NaN for no images)."""
        return {
            "method": self.method,
            "dataset": self.dataset,
            "n": self.n,
            **self.values,
            "skipped": len(self.skipped),
        }


def format_value(value: float | None, decimals: int) -> str:
    """A table cell: ``value`` with ``decimals`` decimals, ``-`` for a missing or NaN value."""
    return "-" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table (lines joined by newlines, no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    return "\n".join(lines)


def records_table(records: Sequence[Record], metrics: Sequence[MetricSpec]) -> str:
    """Rows = methods (in first-seen order), columns = dataset x metric; cells are means over images, followed by
    the image counts and the skipped inputs.

    A metric that does not apply to a dataset (PSNR on an unpaired set) is left out of that dataset's columns.
    """
    methods = list(dict.fromkeys(r.method for r in records))
    datasets = list(dict.fromkeys(r.dataset for r in records))
    by_key = {(r.method, r.dataset): r for r in records}
    columns = [(d, m) for d in datasets for m in metrics if any(m.key in r.values for r in records if r.dataset == d)]
    header = ["method", *[f"{d} {m.label} {ARROWS[m.higher_is_better]}" for d, m in columns]]
    rows = []
    for method in methods:
        cells = [method]
        for d, m in columns:
            rec = by_key.get((method, d))
            cells.append(format_value(rec.values.get(m.key) if rec else None, m.decimals))
        rows.append(cells)
    lines = [markdown_table(header, rows)]
    counts = ", ".join(f"{d}: {max((r.n for r in records if r.dataset == d), default=0)} images" for d in datasets)
    lines.append("")
    lines.append(f"Means over images ({counts}).")
    skipped = [(r, name, why) for r in records for name, why in r.skipped]
    if skipped:
        lines.append("")
        lines.append("Skipped:")
        lines.extend(f"- {r.method} / {r.dataset} / {name}: {why}" for r, name, why in skipped)
    return "\n".join(lines) + "\n"


def scores_table(
    columns: Sequence[str], scores: Mapping[str, Mapping[str, float]], metrics: Sequence[MetricSpec]
) -> str:
    """Rows = metrics, columns = ``columns`` (``scores[column][metric key]``; missing or NaN: ``-``)."""
    rows = [
        [
            f"{m.label} {ARROWS[m.higher_is_better]}",
            *(format_value(scores[c].get(m.key, math.nan), m.decimals) for c in columns),
        ]
        for m in metrics
    ]
    return markdown_table(["metric", *columns], rows)


def write_tables(out: Path, markdown: str, rows: Sequence[Sequence[object]], data: object) -> dict[str, Path]:
    """Write ``table.md`` (``markdown``), ``table.csv`` (``rows``, the first one the header) and ``table.json``
    (``data``, indented) into ``out``; returns their paths by suffix (``md``, ``csv``, ``json``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "json": out / "table.json"}
    paths["md"].write_text(markdown)
    with paths["csv"].open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    return paths


def write_records(
    records: Sequence[Record], metrics: Sequence[MetricSpec], out: Path, note: str = ""
) -> dict[str, Path]:
    """:func:`write_tables` for image-quality records: ``note`` above :func:`records_table`; CSV and JSON rows
    ``method, dataset, n, <metric>..., skipped`` (JSON: ``null`` for NaN)."""
    dicts = [r.as_dict() for r in records]
    keys = ["method", "dataset", "n", *[m.key for m in metrics if any(m.key in r for r in dicts)], "skipped"]
    rows: list[list[object]] = [list(keys), *([row.get(k, "") for k in keys] for row in dicts)]
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in dicts]
    markdown = (note + "\n\n" if note else "") + records_table(records, metrics)
    return write_tables(out, markdown, rows, clean)


class PerImageWriter:
    """``per_image.csv`` written as the scores come: columns ``method, dataset, image, <metric>...`` (``keys``
    in place of ``method, dataset, image`` where given), one row per (method, image), flushed after each row so
    that an interrupted run keeps what it measured.

    The file is created with its header at construction; :meth:`close` it (or use the writer as a context manager).
    """

    def __init__(
        self, path: Path, metrics: Sequence[str], *, keys: Sequence[str] = ("method", "dataset", "image")
    ) -> None:
        self.path = path
        self.fields = [*keys, *metrics]
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields, restval="")
        self._writer.writeheader()
        self._file.flush()

    def write(self, row: Mapping[str, object]) -> None:
        """Append one row (keys among :attr:`fields`; missing ones left empty) and flush it to disk."""
        self._writer.writerow(row)
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PerImageWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
