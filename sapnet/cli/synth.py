"""``sapnet synth``: build a paired training set (``rain/`` + ``clean/``) from a folder of clean photos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from sapnet.data.builder import MIN_SIZE, BuildError, build_rain_set
from sapnet.data.datasets import DatasetError
from sapnet.data.synthesis import UnknownPresetError

__all__ = ["add_parser", "run"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="add synthetic rain to clean photos: a paired training set (rain/ + clean/)",
        description="Render K synthetic rainy versions of every clean photo in --clean into --out/rain/ and "
        "--out/clean/ (lossless PNG, pairs share a file name; K > 1 names them <photo>_1 ... <photo>_K). "
        "Deterministic for a given --seed, whatever the order or interruptions; rerunning completes a partial "
        "set and skips existing pairs. Exit status: 0 all done, 1 some photos failed (unreadable, too small), "
        "2 usage error.",
    )
    p.add_argument("--clean", type=Path, required=True, metavar="DIR", help="folder of clean photos (not recursive)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output set; must not overlap --clean")
    p.add_argument(
        "--preset",
        default="heavy",
        help="rain preset of sapnet.data.synthesis.RAIN_PRESETS, e.g. light, heavy (default: heavy)",
    )
    p.add_argument("--per-image", type=_positive_int, default=1, metavar="K", help="rainy versions per photo (1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="global seed (default: 0)")
    p.add_argument(
        "--min-size",
        type=_positive_int,
        default=MIN_SIZE,
        metavar="N",
        help=f"photos whose shorter side is below N pixels fail (default: {MIN_SIZE}, the training patch size)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch threads (default: torch's own choice; 1 is often faster on a busy machine)",
    )
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the set; see ``sapnet synth --help``."""

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    try:
        report = build_rain_set(
            args.clean,
            args.out,
            preset=args.preset,
            per_image=args.per_image,
            seed=args.seed,
            min_size=args.min_size,
            threads=args.threads,
            log=say,
        )
    except (BuildError, DatasetError, UnknownPresetError) as e:
        say(f"error: {e}")
        return 2
    print(report.summary())
    return 1 if report.failed else 0
