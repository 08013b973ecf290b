"""Argument types shared by the ``sapnet`` commands: each parses one command-line value or raises
``argparse.ArgumentTypeError`` with the reason, which argparse prints beside the option's name."""

from __future__ import annotations

import argparse

__all__ = ["non_negative_int", "positive_int", "tile_size"]


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def tile_size(text: str) -> int | None:
    """A ``--tile`` value: ``auto`` (``None``: chosen from the memory budget), ``0`` (whole images) or pixels."""
    if text.strip().lower() == "auto":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or auto, got {value}")
    return value
