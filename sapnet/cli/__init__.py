"""The ``sapnet`` command line: ``sapnet derain``, ``sapnet demo`` (see :func:`sapnet.cli.main.main`)."""

from sapnet.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
