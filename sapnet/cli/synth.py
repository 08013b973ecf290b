"""``sapnet synth``: build a paired training set (``rain/`` + ``clean/``) from a folder of clean photos, or with
``--video`` a rainy-video benchmark with ground truth (``<clip>/rain/``, ``<clip>/clean/``, ``<clip>/clip.json``).

Which clean photos: train clips (and training pairs) from ``../shared/data/clean_corpus/bsds300_train209`` (safe
training backgrounds), test clips from ``../shared/data/clean_corpus/bsds500_test200``; never from the Rain100L /
Rain100H test backgrounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from sapnet.cli.arguments import positive_int
from sapnet.data.builder import MIN_SIZE, BuildError, BuildReport, build_rain_set
from sapnet.data.datasets import DatasetError
from sapnet.data.synthesis import UnknownPresetError
from sapnet.video.synthesis import (
    CAMERA_KINDS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    DEGRADATION_NAMES,
    MIN_CLIP_SIDE,
    build_video_set,
    parse_degradations,
)

__all__ = ["add_parser", "run"]

_VIDEO_ONLY = ("clips", "frames", "size", "camera", "degrade")
_STILL_ONLY = ("per_image", "min_size")


def _frame_size(text: str) -> tuple[int, int]:
    width, x, height = text.lower().partition("x")
    try:
        size = (int(width), int(height)) if x else None
    except ValueError:
        size = None
    if size is None or min(size) < MIN_CLIP_SIDE:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, each >= {MIN_CLIP_SIDE}, e.g. 256x256; got {text!r}")
    return size


def _degradation(text: str) -> str:
    try:
        parse_degradations(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="add synthetic rain to clean photos: a paired training set (rain/ + clean/), or rainy clips (--video)",
        description="Render K synthetic rainy versions of every clean photo in --clean into --out/rain/ and "
        "--out/clean/ (lossless PNG, pairs share a file name; K > 1 names them <photo>_1 ... <photo>_K). "
        "With --video, render rainy clips with ground truth instead: a camera (pan, zoom, shake, static) moving "
        "over each photo, rain falling across the frames, optional temporal degradations; each clip is "
        "--out/<clip>/rain/frame_000001.png ..., --out/<clip>/clean/... and --out/<clip>/clip.json. "
        "Train clips from ../shared/data/clean_corpus/bsds300_train209 (safe training backgrounds), test clips "
        "from bsds500_test200; never Rain100L/Rain100H test backgrounds. "
        "Deterministic for a given --seed, whatever the order or interruptions; rerunning completes a partial "
        "set and skips existing pairs or clips. Exit status: 0 all done, 1 some photos failed (unreadable, too "
        "small), 2 usage error.",
    )
    p.add_argument("--clean", type=Path, required=True, metavar="DIR", help="folder of clean photos (not recursive)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output set; must not overlap --clean")
    p.add_argument(
        "--preset",
        default="heavy",
        help="rain preset of sapnet.data.synthesis.RAIN_PRESETS, e.g. light, heavy (default: heavy)",
    )
    p.add_argument(
        "--per-image", type=positive_int, default=None, metavar="K", help="rainy versions per photo (1; stills only)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="global seed (default: 0)")
    p.add_argument(
        "--min-size",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"photos whose shorter side is below N pixels fail (default: {MIN_SIZE}, the training patch size; "
        "stills only: a clip needs a photo as large as its camera sweeps over)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch threads (default: torch's own choice; 1 is often faster on a busy machine)",
    )
    video = p.add_argument_group("rainy clips (--video)")
    video.add_argument("--video", action="store_true", help="render rainy clips with ground truth instead of pairs")
    video.add_argument(
        "--clips", type=positive_int, default=None, metavar="N", help="number of clips (default: one per photo)"
    )
    video.add_argument(
        "--frames", type=positive_int, default=None, metavar="N", help=f"frames per clip (default: {DEFAULT_FRAMES})"
    )
    video.add_argument(
        "--size",
        type=_frame_size,
        default=None,
        metavar="WxH",
        help=f"frame size (default: {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})",
    )
    video.add_argument(
        "--camera",
        nargs="+",
        choices=CAMERA_KINDS,
        default=None,
        metavar="KIND",
        help=f"camera motions, used in turn ({', '.join(CAMERA_KINDS)}; default: all)",
    )
    video.add_argument(
        "--degrade",
        nargs="+",
        type=_degradation,
        default=None,
        metavar="D",
        help=f"temporal degradations of the rainy frames: {', '.join(DEGRADATION_NAMES)}, each optionally "
        "with a strength in [0, 1] (fog=0.5; default strength 1; default: none)",
    )
    p.set_defaults(run=run)
    return p


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) is not None]


def run(args: argparse.Namespace) -> int:
    """Build the set; see ``sapnet synth --help``."""

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    wrong = _given(args, _STILL_ONLY) if args.video else _given(args, _VIDEO_ONLY)
    if wrong:
        needs = "apply to still pairs, not to --video" if args.video else "need --video"
        say(f"error: {', '.join(wrong)} {needs}")
        return 2
    report: BuildReport
    try:
        if args.video:
            report = build_video_set(
                args.clean,
                args.out,
                clips=args.clips,
                frames=DEFAULT_FRAMES if args.frames is None else args.frames,
                size=DEFAULT_SIZE if args.size is None else args.size,
                kinds=CAMERA_KINDS if args.camera is None else args.camera,
                preset=args.preset,
                seed=args.seed,
                degradations=args.degrade,
                threads=args.threads,
                log=say,
            )
        else:
            report = build_rain_set(
                args.clean,
                args.out,
                preset=args.preset,
                per_image=1 if args.per_image is None else args.per_image,
                seed=args.seed,
                min_size=MIN_SIZE if args.min_size is None else args.min_size,
                threads=args.threads,
                log=say,
            )
    except (BuildError, DatasetError, UnknownPresetError) as e:
        say(f"error: {e}")
        return 2
    except ValueError as e:  # a bad clip setting (build_video_set checks them all before it writes anything)
        if not args.video:
            raise
        say(f"error: {e}")
        return 2
    print(report.summary())
    return 1 if report.failed else 0
