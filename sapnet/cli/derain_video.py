"""``sapnet derain-video``: derain a clip (a video file or a folder of frames) into an .mp4 or a folder of PNG
frames, frame by frame, with a temporal mode (``frame``, ``fuse``, ``lowrank``, ``recurrent``; see
:mod:`sapnet.video.derain`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from sapnet.cli.arguments import positive_int, tile_size
from sapnet.cli.derain import load_cli_model, one_line
from sapnet.data import DatasetError, ImageReadError
from sapnet.data.listing import list_images
from sapnet.models import DEFAULT_MODEL
from sapnet.video import (
    DEFAULT_CRF,
    DEFAULT_FPS,
    DEFAULT_WINDOW,
    MODES,
    VIDEO_EXTENSIONS,
    FrameReadWarning,
    derain_video,
    probe,
)

__all__ = ["NO_MODEL", "add_parser", "mode_problem", "run"]

NO_MODEL = "none"
"""The ``--model`` value for no network (the ``lowrank`` mode alone)."""


def _crf(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 51, got {value}")
    return value


def _fps(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def mode_problem(mode: str, window: int | None, network: bool) -> str | None:
    """Why the temporal mode ``mode`` cannot run with ``window`` frames (``None``: the mode's default) and with or
    without a network (``network``), or ``None`` when it can: the rules of :class:`sapnet.video.VideoDerainer`,
    checked before a model is loaded or a frame read."""
    if mode not in MODES:
        return f"unknown mode {mode!r}: use one of {', '.join(MODES)}"
    if not network and MODES[mode].needs_model:
        return f"--mode {mode} needs a derain network: --model {NO_MODEL} works with --mode lowrank only"
    if window is None:
        return None
    if window % 2 == 0:
        return f"--window must be odd (a window centred on each frame), got {window}"
    if not MODES[mode].windowed and window != 1:
        return f"--mode {mode} has no window: --window {window} applies to fuse and lowrank"
    if mode == "lowrank" and window < 3:
        return f"--mode lowrank needs --window 3 or more, got {window}"
    return None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "derain-video",
        help="derain a clip (video file or folder of frames) into an .mp4 or a folder of PNG frames",
        description="Derain the clip INPUT (a video file, "
        f"{', '.join(sorted(VIDEO_EXTENSIONS))}, or a folder of image frames in natural order) into OUT, one frame "
        "at a time: an .mp4 (H.264) or a folder of PNG frames (frame_000001.png, ...). OUT appears only when the "
        "whole clip is done. Video files need PyAV (pip install sapnet[video]). Exit status: 0 done, 1 the clip "
        "failed part way (an unreadable file, out of memory), 2 usage, input or checkpoint error (checked before "
        "any frame is derained).",
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="a video file or a folder of image frames")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT",
        help="an .mp4 file, or a folder (a path without a suffix) for PNG frames; must be missing or an empty "
        "folder unless --overwrite",
    )
    p.add_argument(
        "--mode",
        choices=list(MODES),
        default="fuse",
        help="frame: the network on each frame alone; fuse (default): each frame derained, then the flow-aligned "
        "median of its window's derained frames; lowrank: robust PCA of the aligned rainy window, alone with "
        f"--model {NO_MODEL} (training-free) or combined with the network; recurrent: the network's recurrent "
        "state carried from frame to frame (flow-warped, reset at scene cuts)",
    )
    p.add_argument(
        "--window",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"frames in the centred window of fuse and lowrank (odd; default {DEFAULT_WINDOW}; lowrank needs 3 "
        "or more); frame and recurrent take none",
    )
    p.add_argument(
        "--model",
        metavar="NAME|PATH",
        default=None,
        help="published weights by registry name (`sapnet models --pretrained` lists them) or a checkpoint file / "
        f"save_pretrained folder (default: {DEFAULT_MODEL}); {NO_MODEL}: no network (--mode lowrank only)",
    )
    p.add_argument(
        "--tile",
        type=tile_size,
        default=None,
        metavar="N|auto",
        help="run the network in overlapping N x N tiles; 0: whole frames; auto (default): whole frames when they "
        "fit the default memory budget (the rule of sapnet derain)",
    )
    p.add_argument("--device", default="cpu", help="where the network runs, e.g. cpu, cuda, cuda:1 (default: cpu)")
    video = p.add_argument_group("an .mp4 OUT")
    quality = video.add_mutually_exclusive_group()
    quality.add_argument(
        "--crf",
        type=_crf,
        default=None,
        metavar="N",
        help=f"H.264 constant rate factor, 0-51, lower is better (default: {DEFAULT_CRF}, visually near-lossless)",
    )
    quality.add_argument(
        "--lossless",
        action="store_true",
        help="store the RGB values exactly (libx264rgb; any frame size; large files, FFmpeg-based players)",
    )
    video.add_argument(
        "--fps",
        type=_fps,
        default=None,
        metavar="F",
        help=f"frame rate (default: the input video's; {DEFAULT_FPS} for a folder of frames)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT (an .mp4, or a folder holding only image frames) once the new one is done",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def _same_or_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _output_problem(args: argparse.Namespace, video: bool) -> str | None:
    """Why OUT cannot be written (``None``: it can), before any work; see ``--overwrite``."""
    out: Path = args.output
    if not video and out.suffix and not out.is_dir():
        return f"{out}: write to an .mp4 file or to a folder (a path without a suffix)"
    if not video:
        given = [flag for flag, value in (("--crf", args.crf), ("--fps", args.fps)) if value is not None]
        given += ["--lossless"] if args.lossless else []
        if given:
            return f"{', '.join(given)} apply to an .mp4 OUT; PNG frames are lossless and hold no frame rate"
    if video and importlib.util.find_spec("av") is None:
        return "writing an .mp4 needs PyAV: pip install sapnet[video] (or pip install av)"
    if _same_or_inside(args.input, out):
        return f"{out} is (or holds) the input {args.input}: choose another OUT"
    if not out.exists():
        return None
    if out.is_dir() != (not video):
        return f"{out} exists and is {'a folder' if out.is_dir() else 'a file'}: choose another OUT"
    if out.is_dir() and not any(out.iterdir()):
        return None
    if not args.overwrite:
        return f"{out} exists{'' if video else ' and is not empty'} (--overwrite replaces it)"
    if out.is_dir():
        entries = list(out.iterdir())
        frames = set(list_images(out))
        if any(e not in frames or not e.is_file() for e in entries):
            return f"{out} holds more than image frames: --overwrite replaces only a folder of frames"
    return None


def _replace_folder(new: Path, dest: Path) -> None:
    """Put the finished folder ``new`` at ``dest`` (an existing folder of frames), then delete the old frames."""
    old = dest.parent / f".{dest.name}.old-{secrets.token_hex(6)}"
    os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old)


def run(args: argparse.Namespace) -> int:
    """Derain ``args.input`` into ``args.output``; see ``sapnet derain-video --help``."""

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    network = (args.model or "").strip().lower() != NO_MODEL
    video = args.output.suffix.lower() == ".mp4"
    problem = mode_problem(args.mode, args.window, network) or _output_problem(args, video)
    if problem is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FrameReadWarning)  # said when the frames are read
                info = probe(args.input)
        except (DatasetError, ImageReadError, ImportError) as e:  # DatasetError: also a missing input
            problem = one_line(e)
        else:
            if video and args.fps is None and info.fps is None:
                args.fps = DEFAULT_FPS
                what = "a folder of frames" if args.input.is_dir() else f"{args.input}"
                say(f"note: {what} has no frame rate: writing {args.output} at {DEFAULT_FPS} fps (--fps F to choose)")
            if video and not args.lossless and (info.width % 2 or info.height % 2):
                problem = (
                    f"{args.input} is {info.width}x{info.height}: H.264 in 4:2:0 needs an even width and height "
                    "(--lossless takes any size, or write PNG frames)"
                )
    if problem is not None:
        say(f"error: {problem}")
        return 2
    model: torch.nn.Module | None = None
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        say(f"error: cannot use device {args.device!r}: {one_line(e)}")
        return 2
    if network:
        loaded = load_cli_model(args.model or DEFAULT_MODEL, args.device)
        if isinstance(loaded, str):
            say(f"error: {loaded}")
            return 2
        model = loaded[0]
        problem = MODES[args.mode].model_problem(model)
        if problem is not None:
            say(f"error: --mode {args.mode}: {problem}")
            return 2
    replace = args.output.is_dir() and any(args.output.iterdir())  # with --overwrite (checked above)
    dest = args.output
    if replace:  # the new frames go to an empty folder beside OUT, swapped in when done
        dest = args.output.parent / f".{args.output.name}.new-{secrets.token_hex(6)}"
        dest.mkdir()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FrameReadWarning)
            frames = derain_video(
                args.input,
                dest,
                model,
                args.mode,
                window=args.window,
                fps=args.fps,
                tile=args.tile,
                device=device,
                crf=args.crf,
                lossless=args.lossless,
                progress=not args.no_progress,
            )
        for note in caught:
            say(f"warning: {note.message}")
        if replace:
            _replace_folder(dest, args.output)
    except (DatasetError, ImageReadError, OSError, RuntimeError, ValueError) as e:  # OUT is left as it was
        if replace:
            shutil.rmtree(dest, ignore_errors=True)
        say(f"error: {args.input}: {type(e).__name__}: {one_line(e)}")
        return 1
    except BaseException:  # Ctrl-C: OUT is left as it was
        if replace:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    window = f", window {args.window or DEFAULT_WINDOW}" if MODES[args.mode].windowed else ""
    print(
        f"wrote {frames} frames to {args.output} (mode {args.mode}{window}): {seconds / frames:.3f} s per frame, "
        f"{seconds:.1f} s in all"
    )
    return 0
