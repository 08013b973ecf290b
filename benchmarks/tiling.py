"""Tiled inference: agreement with whole-image inference, and peak memory on a large photo.

1. On Rain100L rainy images, PSNR of the tiled result against the untiled one (both clamped to [0, 1],
   float) at the default tile size and overlap. Target: >= 50 dB on every image.
2. Peak resident memory (whole process) of ``sapnet.derain`` on a 4000x3000 photo with tiling, on the CPU.
   Target: < 4 GiB. The photo is a real image resized to 4000x3000 (content does not change memory).

    python benchmarks/tiling.py [--rain DIR] [--limit N] [--tile 256] [--large] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import sapnet
from sapnet.inference import DEFAULT_TILE, DEFAULT_TILE_OVERLAP

SHARED = Path(__file__).resolve().parents[2] / "shared"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def large_photo_peak(checkpoint: Path, source: Path, tile: int) -> None:
    """Run in a fresh process: derain a 4000x3000 photo with tiling and print peak RSS and time."""
    torch.set_num_threads(2)
    model = sapnet.load_model(checkpoint)
    photo = sapnet.read_image(source)
    photo = torch.nn.functional.interpolate(photo[None], size=(3000, 4000), mode="bilinear")[0].clamp(0, 1)
    t0 = time.perf_counter()
    out = sapnet.derain(photo, model, tile=tile)
    elapsed = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"| 4000x3000, tile {tile}, overlap {DEFAULT_TILE_OVERLAP} | {tuple(out.shape)} | "
        f"{peak_gib:.2f} GiB | {elapsed:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rain", type=Path, default=SHARED / "data" / "Rain100L" / "rain")
    parser.add_argument("--checkpoint", type=Path, default=SHARED / "compat" / "sapnet_official_rain100h.pth")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    parser.add_argument("--large", action="store_true", help="also measure the 4000x3000 photo")
    parser.add_argument("--_large-child", dest="large_child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large_child:
        large_photo_peak(args.checkpoint, args.large_child, args.tile)
        return

    torch.set_num_threads(2)
    model = sapnet.load_model(args.checkpoint)
    files = sorted(args.rain.glob("*.png"))[: args.limit]
    values = []
    for f in files:
        x = sapnet.read_image(f)
        values.append(psnr(sapnet.derain(x, model, tile=args.tile), sapnet.derain(x, model)))
        print(f"{f.name}: {values[-1]:.2f} dB", file=sys.stderr)
    print(
        f"Tiled vs untiled, {args.checkpoint.name}, tile {args.tile}, overlap {DEFAULT_TILE_OVERLAP}, "
        f"{len(values)} Rain100L images"
    )
    print()
    print("| images | min PSNR | mean PSNR | images < 50 dB |")
    print("|---|---|---|---|")
    print(
        f"| {len(values)} | {min(values):.2f} dB | {sum(values) / len(values):.2f} dB | {sum(v < 50 for v in values)} |"
    )
    if args.large:
        print()
        print("| photo | output | peak RSS | time |")
        print("|---|---|---|---|")
        cmd = [
            sys.executable,
            __file__,
            "--checkpoint",
            str(args.checkpoint),
            "--tile",
            str(args.tile),
            "--_large-child",
            str(files[0]),
        ]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
