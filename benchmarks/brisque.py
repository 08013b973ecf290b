"""BRISQUE: agreement with the reference scores and speed against the reference implementation.

For each set with a reference CSV in ``../shared/data`` (the 147 SIRR real photos, the 100 Rain100L rainy
inputs), scores every image with ``sapnet.metrics.brisque`` and prints, per set: the share of images within
1.0 of the reference score (target >= 95 %), the largest difference, the two means (target: within 0.3), and
the seconds per image. The baseline for speed is the reference implementation (the ``brisque`` PyPI package,
same LIVE model, 0.2.0): timed now when ``--reference-python`` (default: this interpreter) can import it, otherwise
its measured 0.46 s per image on this CPU is used. Target: >= 10x faster on the real photos.

    python benchmarks/brisque.py [--threads N] [--shared DIR] [--reference-python PATH]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sapnet import read_image
from sapnet.metrics import brisque

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETS = {  # name -> (image folder, reference CSV), under shared/data
    "SIRR_real": ("SIRR_real/rain", "SIRR_real/brisque_reference.csv"),
    "Rain100L rainy": ("Rain100L/rain", "Rain100L/brisque_reference_rain.csv"),
}
REFERENCE_SECONDS = 0.46  # the reference implementation per SIRR photo on this CPU (measured, see docstring)


_REFERENCE_TIMER = """
import sys, time
import numpy as np
from PIL import Image
from brisque import BRISQUE
images = [np.asarray(Image.open(f).convert("RGB")) for f in sys.argv[1:]]
model = BRISQUE(url=False)
t0 = time.perf_counter()
for im in images:
    model.score(im)
print((time.perf_counter() - t0) / len(images))
"""


def reference_seconds(files: list[Path], python: str) -> tuple[float, str]:
    """Seconds per image of the reference package on ``files``, timed by ``python`` (an interpreter where the
    ``brisque`` package is installed; it needs OpenCV and libsvm), or the recorded figure when that fails."""
    run = subprocess.run([python, "-c", _REFERENCE_TIMER, *map(str, files)], capture_output=True, text=True)
    if run.returncode != 0:
        return REFERENCE_SECONDS, f"recorded; `brisque` not runnable with {python}"
    return float(run.stdout.split()[-1]), "timed now"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument(
        "--reference-python",
        default=sys.executable,
        help="a Python with the reference `brisque` package installed (default: this one)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"BRISQUE, sapnet.metrics.brisque vs reference scores, {args.threads} thread(s)")
    print()
    print("| set | images | within 1.0 | max abs diff | mean ours | mean reference | s / image |")
    print("|---|---|---|---|---|---|---|")
    speed: dict[str, tuple[float, list[Path]]] = {}
    for name, (folder, reference_csv) in SETS.items():
        with (args.shared / "data" / reference_csv).open(newline="") as f:
            rows = list(csv.DictReader(f))
        files = [args.shared / "data" / folder / r["file"] for r in rows]
        images = [read_image(p) for p in files]  # decoding is not part of the metric
        brisque(images[0])  # warm-up (model parsing, tables)
        t0 = time.perf_counter()
        ours = np.array([brisque(x).item() for x in images])
        seconds = (time.perf_counter() - t0) / len(images)
        ref = np.array([float(r["brisque"]) for r in rows])
        diff = np.abs(ours - ref)
        print(
            f"| {name} | {len(rows)} | {100 * (diff <= 1).mean():.1f} % | {diff.max():.3f} | {ours.mean():.3f} | "
            f"{ref.mean():.3f} | {seconds:.4f} |"
        )
        speed[name] = (seconds, files)

    ours_s, files = speed["SIRR_real"]
    ref_s, how = reference_seconds(files, args.reference_python)
    print()
    print("| SIRR real photos (147) | s / image | speed-up |")
    print("|---|---|---|")
    print(f"| reference implementation ({how}) | {ref_s:.3f} | 1.0x |")
    print(f"| sapnet.metrics.brisque | {ours_s:.4f} | {ref_s / ours_s:.1f}x |")
    print()
    print("target: >= 10x faster, within 1.0 on >= 95 % of images, means within 0.3")


if __name__ == "__main__":
    main()
