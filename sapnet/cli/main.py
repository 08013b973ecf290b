"""``sapnet`` entry point: an argparse parser with one subcommand per module of :mod:`sapnet.cli`.

Each subcommand module exposes ``add_parser(subparsers)``, which registers its parser and sets ``run``
(``run(args) -> int``, the exit status) as its default.
"""

from __future__ import annotations

import argparse
import sys

from sapnet import __version__
from sapnet.cli import adapt, demo, derain, derain_video, download, evaluate, export, models, synth, train, weights

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (derain, derain_video, evaluate, export, models, weights, demo, synth, download, train, adapt)


def build_parser() -> argparse.ArgumentParser:
    """The ``sapnet`` parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="sapnet", description="Single-image deraining with SAPNet and PReNet.")
    parser.add_argument("--version", action="version", version=f"sapnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``sapnet`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    0: success; 1: some inputs failed; 2: usage or setup error (bad arguments, no usable checkpoint);
    130: interrupted. ``--help`` and ``--version`` return 0 instead of raising ``SystemExit``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (argparse already printed why)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("sapnet: interrupted", file=sys.stderr)
        return 130
