"""``sapnet export``: a derain network as an ONNX file (float32 or int8), checked against PyTorch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sapnet.cli.arguments import positive_int
from sapnet.cli.derain import load_cli_model, one_line
from sapnet.deploy import CALIBRATION_SIZE, DEFAULT_EXPORT_SIZE, export_onnx

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a derain network to ONNX (float32 or int8), checked with ONNX Runtime",
        description="Export a derain network to an ONNX file: input 'image' float32 (N, 3, H, W) RGB in [0, 1], "
        "output 'derained' of the same shape, not clamped (clamp to [0, 1]); the pre- and post-processing, the "
        "network and its weights are recorded in the file's metadata (sapnet.*). The file is then run in ONNX "
        "Runtime on a test image against PyTorch and the largest difference is printed. Needs "
        "pip install 'sapnet[deploy]'. Exit status: 0 done, 2 usage, checkpoint or export error.",
    )
    p.add_argument(
        "model", metavar="NAME_OR_CHECKPOINT", help="registry name, checkpoint file or save_pretrained folder"
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=positive_int, metavar="N", help="ONNX opset, 18 or newer (default: the exporter's)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="batch, height and width free (any image size); default: fixed to --batch x 3 x --size",
    )
    p.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        default=list(DEFAULT_EXPORT_SIZE),
        metavar=("HEIGHT", "WIDTH"),
        help=f"input size of a fixed-shape export, and of the check (default: {DEFAULT_EXPORT_SIZE[0]} "
        f"{DEFAULT_EXPORT_SIZE[1]}, Rain100L)",
    )
    p.add_argument("--batch", type=positive_int, default=1, metavar="N", help="batch size (default: 1)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="write an int8 model: static quantisation (QDQ, per-channel int8 weights, uint8 activations) of "
        "the convolutions, calibrated on --calibrate. Measured with the public SAPNet weights: 0.12 dB PSNR "
        "below float32 on Rain100L for 0.78x its time (benchmarks/RESULTS.md)",
    )
    p.add_argument("--calibrate", type=Path, metavar="DIR", help="folder of rainy images to calibrate --int8 on")
    p.add_argument(
        "--calibration-size",
        type=positive_int,
        nargs=2,
        default=list(CALIBRATION_SIZE),
        metavar=("HEIGHT", "WIDTH"),
        help=f"the calibration images are cut (centre crop) to this size (default: {CALIBRATION_SIZE[0]} "
        f"{CALIBRATION_SIZE[1]})",
    )
    p.add_argument("--calibration-images", type=positive_int, metavar="N", help="use the first N images only")
    p.add_argument("--weights-dir", type=Path, metavar="DIR", help="offline mirror folder for published weights")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the ONNX Runtime check")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Export ``args.model`` to ``args.output``; see ``sapnet export --help``."""
    if args.int8 != (args.calibrate is not None):
        print(
            "error: --int8 needs --calibrate DIR (a folder of rainy images), and --calibrate needs --int8",
            file=sys.stderr,
        )
        return 2
    loaded = load_cli_model(args.model, "cpu", args.weights_dir)
    if isinstance(loaded, str):
        print(f"error: {loaded}", file=sys.stderr)
        return 2
    model, _ = loaded
    try:
        report = export_onnx(
            model,
            args.output,
            opset=args.opset,
            dynamic=args.dynamic,
            size=tuple(args.size),
            batch=args.batch,
            int8=args.int8,
            calibrate=args.calibrate,
            calibration_size=tuple(args.calibration_size),
            calibration_limit=args.calibration_images,
            check=args.check,
            source=args.model,
        )
    except (ImportError, OSError, ValueError, RuntimeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(report.summary())
    if args.int8:
        print(
            "note: int8 measured 0.12 dB PSNR below float32 with the public SAPNet weights on Rain100L; "
            "check it on your data with benchmarks/int8_quality.py",
            file=sys.stderr,
        )
    return 0
