"""Inference: ``derain`` for images of any common kind, whole or tiled to fit a memory budget."""

from sapnet.inference.derain import derain, network_width, resolve_model
from sapnet.inference.tiling import (
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_TILE,
    DEFAULT_TILE_OVERLAP,
    activation_bytes,
    choose_tile,
    tiled_apply,
)

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_TILE",
    "DEFAULT_TILE_OVERLAP",
    "activation_bytes",
    "choose_tile",
    "derain",
    "network_width",
    "resolve_model",
    "tiled_apply",
]
