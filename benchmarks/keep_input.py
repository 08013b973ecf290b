"""What putting back the rainy pixels a network changed little does (``sapnet.models.keep_unchanged``,
``DerainNetConfig.keep_input``, the ``real.keep`` pseudo-label candidates), threshold by threshold.

    python benchmarks/keep_input.py [--model prenet.rain100h] [--thresholds 0.01 0.02 0.04 0.08] [--limit N]
                                    [--threads 2]

The network derains each image once; every threshold is applied to that output. Rain100L (``../shared``, its
100 test pairs): Y-PSNR / SSIM of the outputs saved as 8-bit (truncated), the literature's protocol. Real rain:
mean BRISQUE / NIQE of the 20 SIRR photos that choose ``best.pt`` in real-rain adaptation
(``datasets/splits/sirr_real_select.txt``, downscaled to 1024 px as the adaptation does, rounded to 8 bits as
the pseudo-label bank stores them); the 30 evaluation photos are not used. Prints one Markdown table with each
threshold beside the plain output (threshold "-") and the change from it.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from tqdm import tqdm

import sapnet
from sapnet.data import fit_max_side, quantize_8bit, read_image
from sapnet.data.listing import list_images, read_name_list
from sapnet.evaluation.tables import markdown_table
from sapnet.metrics import METRICS, psnr, ssim
from sapnet.models import keep_unchanged

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_SIDE = 1024  # real.max_side of configs/adapt_real.yaml


def _variants(rainy: torch.Tensor, out: torch.Tensor, thresholds: list[float]) -> dict[str, torch.Tensor]:
    """The plain output ("-") and each threshold's, clamped to [0, 1]."""
    out = out.clamp(0, 1)
    return {"-": out} | {f"{t:g}": keep_unchanged(rainy, out, t) for t in thresholds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="prenet.rain100h", help="registry name or checkpoint")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.02, 0.04, 0.08])
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = sapnet.load_model(args.model)
    keys = ["-", *(f"{t:g}" for t in args.thresholds)]
    scores: dict[str, dict[str, list[float]]] = {k: {"psnr": [], "ssim": [], "brisque": [], "niqe": []} for k in keys}

    rain100l = SHARED / "data" / "Rain100L"
    for rainy_file in tqdm(list_images(rain100l / "rain")[: args.limit], desc="Rain100L", unit="img"):
        rainy = read_image(rainy_file)
        clean = read_image(rain100l / "clean" / rainy_file.name)[None]
        for k, y in _variants(rainy, sapnet.derain(rainy, net), args.thresholds).items():
            y = quantize_8bit(y[None], "floor")
            scores[k]["psnr"].append(float(psnr(y, clean)))
            scores[k]["ssim"].append(float(ssim(y, clean)))

    names = read_name_list(ROOT / "datasets" / "splits" / "sirr_real_select.txt")[: args.limit]
    for name in tqdm(names, desc="SIRR selection photos", unit="img"):
        rainy = fit_max_side(read_image(SHARED / "data" / "SIRR_real" / "rain" / name), REAL_SIDE)
        for k, y in _variants(rainy, sapnet.derain(rainy, net), args.thresholds).items():
            y = quantize_8bit(y, "round")
            for metric in ("brisque", "niqe"):
                scores[k][metric].append(float(METRICS[metric].fn(y, None)))

    mean = {k: {m: statistics.fmean(v) for m, v in s.items()} for k, s in scores.items()}
    base = mean["-"]
    rows = []
    for k in keys:
        m = mean[k]
        rows.append(
            [
                k,
                f"{m['psnr']:.3f} ({m['psnr'] - base['psnr']:+.2f} dB)",
                f"{m['ssim']:.4f} ({m['ssim'] - base['ssim']:+.4f})",
                f"{m['brisque']:.3f} ({m['brisque'] / base['brisque']:.3f}x)",
                f"{m['niqe']:.3f} ({m['niqe'] / base['niqe']:.3f}x)",
            ]
        )
    n_pairs, n_real = len(scores["-"]["psnr"]), len(scores["-"]["brisque"])
    print(f"\n{args.model}: Rain100L {n_pairs} pairs, {n_real} SIRR selection photos, {args.threads} thread(s)\n")
    header = ["keep threshold", "Rain100L Y-PSNR", "Rain100L Y-SSIM", "SIRR BRISQUE ↓", "SIRR NIQE ↓"]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
