"""Evaluation: result tables and comparison grids."""

from sapnet.evaluation.grid import comparison_grid

__all__ = ["comparison_grid"]
