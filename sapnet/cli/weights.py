"""``sapnet weights``: fetch published weights into the cache, or into a folder to carry to an offline machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sapnet.models import WEIGHTS, WeightsError, download_weights, get_weights
from sapnet.models.hub import WEIGHTS_DIR_ENV, cache_dir

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "weights",
        help="download published weights into the cache or a folder (for offline machines)",
        description="Download registry weights, checking each file's SHA-256. Without --to they go to the cache "
        f"({cache_dir()}); with --to DIR into DIR, which an offline machine then uses as {WEIGHTS_DIR_ENV}=DIR. "
        "Exit status: 0 all fetched, 1 some failed, 2 usage error.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = sub.add_parser("download", help="download weights by name, or --all")
    d.add_argument("names", nargs="*", metavar="NAME", help="registry names (see `sapnet models --pretrained`)")
    d.add_argument("--all", action="store_true", help="every published weights entry")
    d.add_argument("--to", type=Path, default=None, metavar="DIR", help="a folder instead of the cache")
    d.add_argument("--timeout", type=float, default=30.0, metavar="S", help="network timeout in seconds (30)")
    d.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Download ``args.names`` (or all); see ``sapnet weights download --help``."""
    if args.all == bool(args.names):
        print("error: give weights NAMEs or --all (not both)", file=sys.stderr)
        return 2
    try:
        entries = list(WEIGHTS.values()) if args.all else [get_weights(n) for n in args.names]
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    failed = 0
    for entry in entries:
        try:
            path = download_weights(entry, args.to, timeout=args.timeout, log=lambda m: print(m, file=sys.stderr))
        except WeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{entry.name}: {path}")
    return 1 if failed else 0
