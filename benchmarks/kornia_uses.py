"""Where kornia would replace our own code: speed and agreement of each candidate, measured in one run.

Each row compares our implementation (the baseline the ratio divides by) with the kornia call that would
do the same job, on real Rain100L images (481x321), on the CPU:

1. the paired random crop + horizontal flip of a training pair (``sapnet.training.random_patch`` against
   ``kornia.augmentation.AugmentationSequential(RandomCrop, RandomHorizontalFlip, data_keys=[...])``);
2. luma for PSNR / SSIM (``sapnet.metrics.rgb_to_y``, MATLAB ``rgb2ycbcr``, against
   ``kornia.color.rgb_to_ycbcr``, full-range BT.601), and the PSNR each gives;
3. SSIM (``sapnet.metrics.ssim``: 11x11 Gaussian, sigma 1.5, 'valid' filtering in float64 as MATLAB's
   ``ssim_index``, against ``kornia.metrics.ssim`` with 'same' and 'valid' padding, float64);
4. PSNR on the Y channel (``sapnet.metrics.psnr`` against ``kornia.metrics.psnr`` on our Y).

    python benchmarks/kornia_uses.py [--pairs N] [--repeats N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import kornia
import torch

from sapnet.data import find_pairs, read_image
from sapnet.metrics import psnr, rgb_to_y, ssim
from sapnet.training.data import random_patch

SHARED = Path(__file__).resolve().parents[2] / "shared"


def seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def row(job: str, ours: float, theirs: float, agreement: str, decision: str) -> str:
    return f"| {job} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} | {theirs / ours:.1f}x | {agreement} | {decision} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "Rain100L")
    parser.add_argument("--pairs", type=int, default=5, help="Rain100L pairs to measure on")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    pairs = find_pairs(args.data)[: args.pairs]
    images = [(read_image(p.rainy), read_image(p.clean)) for p in pairs]
    print(f"kornia {kornia.__version__}, torch {torch.__version__}, {len(images)} Rain100L pairs, CPU, 2 threads\n")
    print("| job | ours (ms) | kornia (ms) | kornia / ours | agreement | decision |")
    print("|---|---:|---:|---:|---|---|")

    # 1. paired crop + flip (per training pair, as the DataLoader calls it).
    rainy, clean = images[0]
    gen = torch.Generator().manual_seed(0)
    aug = kornia.augmentation.AugmentationSequential(
        kornia.augmentation.RandomCrop((100, 100)),
        kornia.augmentation.RandomHorizontalFlip(),
        data_keys=["input", "input"],
    )
    t_ours = seconds(lambda: random_patch((rainy, clean), 100, gen), args.repeats)
    t_k = seconds(lambda: aug(rainy[None], clean[None]), args.repeats)
    # kornia applies one draw to both keys: check that the pair stayed aligned (same crop of the same offsets).
    torch.manual_seed(1)
    k_r, k_c = aug(rainy[None], rainy[None])
    aligned = bool(torch.equal(k_r, k_c))
    print(
        row(
            "paired 100x100 crop + h-flip",
            t_ours,
            t_k,
            f"same op (kornia pair aligned: {aligned}); kornia draws from the global RNG",
            "keep ours: faster, and draws from the per-item generator that makes resume exact",
        )
    )

    # 2. luma.
    y_ours = [rgb_to_y(c[None]) for c, _ in images]
    y_k = [kornia.color.rgb_to_ycbcr(c[None].double())[:, :1] * 255 for c, _ in images]
    dy = max(float((a - b).abs().max()) for a, b in zip(y_ours, y_k, strict=True))
    p_ours = sum(float(psnr(r[None], c[None])) for r, c in images) / len(images)
    p_k = sum(
        float(
            kornia.metrics.psnr(
                kornia.color.rgb_to_ycbcr(r[None].double())[:, :1],
                kornia.color.rgb_to_ycbcr(c[None].double())[:, :1],
                1.0,
            )
        )
        for r, c in images
    ) / len(images)
    t_ours = seconds(lambda: rgb_to_y(rainy[None]), args.repeats)
    t_k = seconds(lambda: kornia.color.rgb_to_ycbcr(rainy[None].double()), args.repeats)
    print(
        row(
            "luma (Y of YCbCr)",
            t_ours,
            t_k,
            f"max abs dY {dy:.1f}/255; rainy PSNR {p_ours:.2f} (MATLAB) vs {p_k:.2f} dB (full range)",
            "keep ours: the protocol is MATLAB's studio-range rgb2ycbcr",
        )
    )

    # 3. SSIM on Y, float64.
    s_ours = [float(ssim(r[None], c[None])) for r, c in images]
    ys = [(rgb_to_y(r[None]) / 255, rgb_to_y(c[None]) / 255) for r, c in images]
    s_same = [float(kornia.metrics.ssim(a, b, 11, 1.0).mean()) for a, b in ys]
    s_valid = [float(kornia.metrics.ssim(a, b, 11, 1.0, padding="valid").mean()) for a, b in ys]
    d_same = max(abs(a - b) for a, b in zip(s_ours, s_same, strict=True))
    d_valid = max(abs(a - b) for a, b in zip(s_ours, s_valid, strict=True))
    ya, yb = ys[0]
    t_ours = seconds(lambda: ssim(rainy[None], clean[None]), args.repeats)
    t_k = seconds(lambda: kornia.metrics.ssim(ya, yb, 11, 1.0, padding="valid").mean(), args.repeats)
    print(
        row(
            "SSIM (Y, 11x11 Gaussian, float64)",
            t_ours,
            t_k,
            f"max abs dSSIM 'valid' {d_valid:.1e}, 'same' {d_same:.1e}",
            "keep ours: faster; 'same' padding is not the protocol",
        )
    )

    # 4. PSNR on Y.
    d_p = max(
        abs(float(psnr(r[None], c[None])) - float(kornia.metrics.psnr(a, b, 1.0)))
        for (r, c), (a, b) in zip(images, ys, strict=True)
    )
    t_ours = seconds(lambda: psnr(rainy[None], clean[None]), args.repeats)
    t_k = seconds(
        lambda: kornia.metrics.psnr(rgb_to_y(rainy[None]) / 255, rgb_to_y(clean[None]) / 255, 1.0), args.repeats
    )
    print(
        row(
            "PSNR (Y)",
            t_ours,
            t_k,
            f"max abs dPSNR {d_p:.1e} dB (same Y)",
            "keep ours: one call does the protocol's luma, range and rounding",
        )
    )


if __name__ == "__main__":
    main()
