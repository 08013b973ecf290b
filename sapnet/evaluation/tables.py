"""Result tables: one record per (method, dataset), written as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MetricSpec", "Record", "markdown_table", "write_tables"]


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is shown: its key, column label, decimals and direction."""

    key: str
    label: str
    decimals: int
    higher_is_better: bool


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


def _fmt(value: float | None, decimals: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def markdown_table(records: Sequence[Record], metrics: Sequence[MetricSpec]) -> str:
    """Rows = methods (in first-seen order), columns = dataset x metric; cells are means over images.

    A metric that does not apply to a dataset (PSNR on an unpaired set) is left out of that dataset's columns.
    """
    methods = list(dict.fromkeys(r.method for r in records))
    datasets = list(dict.fromkeys(r.dataset for r in records))
    by_key = {(r.method, r.dataset): r for r in records}
    columns = [(d, m) for d in datasets for m in metrics if any(m.key in r.values for r in records if r.dataset == d)]
    arrows = {True: "↑", False: "↓"}
    header = ["method", *[f"{d} {m.label} {arrows[m.higher_is_better]}" for d, m in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method]
        for d, m in columns:
            rec = by_key.get((method, d))
            cells.append(_fmt(rec.values.get(m.key) if rec else None, m.decimals))
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{d}: {max((r.n for r in records if r.dataset == d), default=0)} images" for d in datasets)
    lines.append("")
    lines.append(f"Means over images ({counts}).")
    skipped = [(r, name, why) for r in records for name, why in r.skipped]
    if skipped:
        lines.append("")
        lines.append("Skipped:")
        lines.extend(f"- {r.method} / {r.dataset} / {name}: {why}" for r, name, why in skipped)
    return "\n".join(lines) + "\n"


def write_tables(
    records: Sequence[Record], metrics: Sequence[MetricSpec], out: Path, note: str = ""
) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``table.json`` into ``out``; returns their paths by suffix."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "json": out / "table.json"}
    paths["md"].write_text((note + "\n\n" if note else "") + markdown_table(records, metrics))
    rows = [r.as_dict() for r in records]
    keys = ["method", "dataset", "n", *[m.key for m in metrics if any(m.key in r for r in rows)], "skipped"]
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
    paths["json"].write_text(json.dumps(clean, indent=2) + "\n")
    return paths
