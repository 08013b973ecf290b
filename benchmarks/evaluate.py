"""Time a full Rain100L evaluation (PSNR / SSIM / BRISQUE, one model), split into model and metric time.

    python benchmarks/evaluate.py [--checkpoint PATH] [--dataset DIR] [--threads 2]

Defaults: the public PReNet Rain100L checkpoint and the Rain100L test pairs from ``../shared``. Target: metric
time for the 100 pairs under 10 s on the 2-core CPU. Prints the table too, so the figures can be checked
against the published ones (PReNet on Rain100L: 37.48 / 0.9792).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sapnet.evaluation import evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared"
TARGET_SECONDS = 10.0  # metric time budget for the 100 Rain100L pairs on the 2-core CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=SHARED / "compat" / "prenet_official_rain100l.pth")
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "Rain100L")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = evaluate(
            [str(args.checkpoint)],
            [f"Rain100L={args.dataset}"],
            ["psnr", "ssim", "brisque"],
            Path(out),
            progress=False,
        )
        total = time.perf_counter() - t0
        table = result.files["md"].read_text()
    n = max(r.n for r in result.records)
    other = total - result.model_seconds - result.metric_seconds
    print(table)
    print(f"Full Rain100L evaluation ({n} pairs, rows Rainy + {args.checkpoint.name}), {args.threads} threads")
    print()
    print("| part | seconds | per pair |")
    print("|---|---|---|")
    print(f"| model (sapnet.derain) | {result.model_seconds:.1f} | {result.model_seconds / n:.3f} |")
    print(
        f"| metrics (PSNR + SSIM + BRISQUE, 2 rows) | {result.metric_seconds:.1f} | {result.metric_seconds / n:.3f} |"
    )
    print(f"| reading images, tables, grid | {other:.1f} | {other / n:.3f} |")
    print(f"| total | {total:.1f} | {total / n:.3f} |")
    print()
    print(
        f"metric time {result.metric_seconds:.1f} s for {n} pairs: {result.metric_seconds / TARGET_SECONDS:.2f}x "
        f"the {TARGET_SECONDS:.0f} s budget"
    )


if __name__ == "__main__":
    main()
