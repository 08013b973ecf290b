"""Evaluation: benchmark scores with the literature's protocol, result tables and comparison grids."""

from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.runner import (
    METRICS,
    DatasetSpec,
    EvaluationResult,
    Method,
    evaluate,
    parse_dataset,
    resolve_method,
    resolve_methods,
)
from sapnet.evaluation.tables import MetricSpec, Record, markdown_table, write_tables

__all__ = [
    "METRICS",
    "DatasetSpec",
    "EvaluationResult",
    "Method",
    "MetricSpec",
    "Record",
    "comparison_grid",
    "evaluate",
    "markdown_table",
    "parse_dataset",
    "resolve_method",
    "resolve_methods",
    "write_tables",
]
