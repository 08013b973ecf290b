"""``sapnet evaluate`` (also ``python evaluate.py``): PSNR / SSIM / BRISQUE tables, methods x datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sapnet.evaluation.runner import METRICS, check_metrics, evaluate


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score derain methods on benchmark folders (PSNR/SSIM on Y as in the literature, BRISQUE)",
        description=__doc__
        + " The input row 'Rainy' is always included. Paired folders get PSNR/SSIM (and the no-reference "
        "metrics when asked); folders of real photos get the no-reference metrics.",
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="[LABEL=]M",
        help="a checkpoint file (ours or a public SAPNet/PReNet .pth), a shipped model name, or a folder of "
        "precomputed outputs of any method (DIR/<dataset>/<name>.png or DIR/<name>.png); repeatable",
    )
    p.add_argument(
        "--dataset",
        dest="datasets",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a benchmark folder in any supported layout (rain/+clean/, rainy/+norain-*, input/+target/, "
        "NNN_in/NNN_GT, ...) or a folder of real rainy photos; repeatable",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=["psnr", "ssim"],
        type=_metric,
        metavar="NAME",
        help=f"any of {', '.join(METRICS)} (default: psnr ssim)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for tables, per-image CSV, grids")
    p.add_argument("--save-outputs", action="store_true", help="write the scored (quantised) outputs as PNG")
    p.add_argument("--device", default=None, help="where networks run (default: cpu)")
    p.add_argument("--tile", type=int, default=None, metavar="N", help="derain in N x N tiles (default: whole)")
    p.add_argument("--grid-images", type=int, default=4, metavar="K", help="images per comparison grid")
    p.set_defaults(run=run)
    return p


def _metric(name: str) -> str:
    try:
        check_metrics([name])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def run(args: argparse.Namespace) -> int:
    result = evaluate(
        args.models,
        args.datasets,
        args.metrics,
        args.out,
        save_outputs=args.save_outputs,
        device=args.device,
        tile=args.tile,
        grid_images=args.grid_images,
        log=lambda message: print(message, file=sys.stderr),
    )
    print(result.files["md"].read_text())
    print(f"model time {result.model_seconds:.1f} s, metric time {result.metric_seconds:.1f} s")
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    skipped = any(r.skipped for r in result.records)
    return 1 if skipped else 0
