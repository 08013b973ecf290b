"""Inference: ``derain`` for images of any common kind, with optional tiling."""

from sapnet.inference.derain import derain, resolve_model
from sapnet.inference.tiling import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, tiled_apply

__all__ = ["DEFAULT_TILE", "DEFAULT_TILE_OVERLAP", "derain", "resolve_model", "tiled_apply"]
