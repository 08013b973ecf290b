"""``sapnet download``: fetch a standard deraining set, or say where to get it by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sapnet.data.download import DownloadError, default_data_dir, download
from sapnet.data.registry import DATASETS, get_download

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "download",
        help="download a standard deraining set (or print where to get it by hand)",
        description="Download, verify and unpack a standard deraining set into DEST/<name>. Sets shared only "
        "on Baidu Pan / OneDrive / Google Drive cannot be fetched by a script: for them the command prints the "
        "page and the folder to unpack into. Exit status: 0 done, 1 download failed or manual set, 2 usage error.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help=f"one of {', '.join(DATASETS)}")
    p.add_argument(
        "--dest",
        type=Path,
        default=None,
        metavar="DIR",
        help="download root (default: $SAPNET_DATA, else ./data)",
    )
    p.add_argument("--list", action="store_true", help="list the known sets and how each is obtained")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="network timeout in seconds (10)")
    p.set_defaults(run=run)
    return p


def _listing() -> str:
    width = max(len(name) for name in DATASETS)
    lines = []
    for info in DATASETS.values():
        how = "manual  " if info.manual else "download"
        lines.append(f"{info.name:<{width}}  {how}  {info.page}  ({info.contents})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Download ``args.name`` or list the sets; see ``sapnet download --help``."""
    if args.list:
        print(_listing())
        return 0
    if not args.name:
        print("error: give a data set NAME, or --list to see them", file=sys.stderr)
        return 2
    try:
        info = get_download(args.name)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    dest = args.dest if args.dest is not None else default_data_dir()
    try:
        target = download(info, dest, timeout=args.timeout, log=lambda m: print(m, file=sys.stderr))
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(target)
    return 0
