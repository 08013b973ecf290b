"""Calibrate the rain renderer: render the presets on the 100 Rain100L backgrounds and compare with real rain.

    python benchmarks/synthesis.py [--shared DIR] [--seed 0] [--threads 1] [--grid benchmarks/synthesis_grid.png]

Rainy-vs-clean Y-PSNR / Y-SSIM (the deraining protocol) of ``synthesize_rain(clean, preset, seed)`` averaged
over the 100 clean backgrounds of ``shared/data/Rain100L`` (images of one size rendered as one batch), against
the real sets' rainy inputs: Rain100L 26.90 / 0.838 (measured here) for ``"light"``, Rain100H 13.55 / 0.379
for ``"heavy"``. Tolerance: 1 dB and 0.03. Prints a Markdown table and the render time per image, and writes a
comparison grid (real Rain100L rainy | ours light | ours heavy) for three backgrounds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sapnet.data import read_image, synthesize_rain
from sapnet.evaluation import comparison_grid
from sapnet.metrics import psnr, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared"
GRID = Path(__file__).resolve().parent / "synthesis_grid.png"
# preset -> (real set, its rainy-input Y-PSNR, Y-SSIM)
TARGETS = {"light": ("Rain100L", 26.90, 0.838), "heavy": ("Rain100H", 13.55, 0.379)}
TOLERANCE = (1.0, 0.03)
GRID_IMAGES = ("001", "014", "052")


def measure(clean: list[torch.Tensor], preset: str, seed: int) -> tuple[float, float, float]:
    """Mean Y-PSNR, mean Y-SSIM and render seconds per image of ``preset`` over ``clean`` (list of (3, H, W))."""
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for image in clean:
        groups.setdefault(tuple(image.shape), []).append(image)
    p, s, seconds = [], [], 0.0
    for images in groups.values():
        batch = torch.stack(images)
        t0 = time.perf_counter()
        rainy = synthesize_rain(batch, preset, seed=seed)
        seconds += time.perf_counter() - t0
        p.append(psnr(rainy, batch))
        s.append(ssim(rainy, batch))
    return torch.cat(p).mean().item(), torch.cat(s).mean().item(), seconds / len(clean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared folder (default: ../shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=Path, default=GRID, help="where to write the comparison grid PNG")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = args.shared / "data" / "Rain100L"
    paths = sorted((root / "clean").glob("*.png"))
    if not paths:
        raise SystemExit(f"no clean backgrounds in {root / 'clean'}")
    clean = [read_image(p) for p in paths]

    print(f"Rainy vs clean on the {len(clean)} Rain100L backgrounds, seed {args.seed}, {args.threads} thread(s)")
    print()
    print("| preset | ours PSNR / SSIM | real set PSNR / SSIM | difference | within 1 dB / 0.03 | render s / image |")
    print("|---|---|---|---|---|---|")
    for preset, (name, t_psnr, t_ssim) in TARGETS.items():
        p, s, sec = measure(clean, preset, args.seed)
        ok = abs(p - t_psnr) <= TOLERANCE[0] and abs(s - t_ssim) <= TOLERANCE[1]
        print(
            f"| `{preset}` | {p:.2f} / {s:.4f} | {name} {t_psnr:.2f} / {t_ssim:.3f} | "
            f"{p - t_psnr:+.2f} / {s - t_ssim:+.4f} | {'yes' if ok else 'NO'} | {sec:.3f} |"
        )

    rows = []
    for stem in GRID_IMAGES:
        background = read_image(root / "clean" / f"{stem}.png")
        real = read_image(root / "rain" / f"{stem}.png")
        rows.append(
            [real, synthesize_rain(background, "light", args.seed), synthesize_rain(background, "heavy", args.seed)]
        )
    comparison_grid(rows, ["real Rain100L rainy", "ours: light", "ours: heavy"]).save(args.grid)
    print()
    print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
