"""Evaluation: benchmark scores with the literature's protocol, derain methods, result tables and comparison grids;
video deraining on clips (:func:`evaluate_video`)."""

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
from sapnet.evaluation.video import (
    CLEAN,
    DEFAULT_VIDEO_MODES,
    NO_NETWORK,
    SECONDS_PER_FRAME,
    VIDEO_METRICS,
    Clip,
    VideoEvaluationResult,
    VideoRow,
    check_video_metrics,
    evaluate_video,
    find_clips,
)

__all__ = [
    "CLEAN",
    "DEFAULT_VIDEO_MODES",
    "NO_NETWORK",
    "RAINY",
    "SECONDS_PER_FRAME",
    "VIDEO_METRICS",
    "Clip",
    "DatasetSpec",
    "EvaluationResult",
    "Method",
    "MethodRunner",
    "PerImageWriter",
    "Record",
    "VideoEvaluationResult",
    "VideoRow",
    "check_video_metrics",
    "comparison_grid",
    "evaluate",
    "evaluate_video",
    "find_clips",
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
