"""Evaluation: benchmark scores with the literature's protocol, derain methods, result tables and comparison grids."""

from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.methods import Method, MethodRunner, resolve_method, resolve_methods
from sapnet.evaluation.runner import RAINY, DatasetSpec, EvaluationResult, evaluate, parse_dataset
from sapnet.evaluation.tables import (
    PerImageWriter,
    Record,
    format_value,
    markdown_table,
    records_table,
    scores_table,
    write_records,
    write_tables,
)

__all__ = [
    "RAINY",
    "DatasetSpec",
    "EvaluationResult",
    "Method",
    "MethodRunner",
    "PerImageWriter",
    "Record",
    "comparison_grid",
    "evaluate",
    "format_value",
    "markdown_table",
    "parse_dataset",
    "records_table",
    "resolve_method",
    "resolve_methods",
    "scores_table",
    "write_records",
    "write_tables",
]
