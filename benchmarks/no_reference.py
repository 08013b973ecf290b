"""No-reference metrics (BRISQUE, NIQE, PIQE): agreement with reference scores and speed against the reference code.

For each metric and each set with a reference CSV in ``../shared/data`` (the 147 SIRR real photos, the 100
Rain100L rainy inputs), scores every image with sapnet and prints: the share of images within the tolerance of
the reference score (target >= 95 %), the largest difference, the two means (target: within the mean
tolerance), and the seconds per image. The baseline for speed is the reference implementation on the SIRR
photos, timed now in a subprocess when it can run there, otherwise its recorded time on this CPU:

* BRISQUE: the ``brisque`` PyPI package (0.2.0, same LIVE model), importable by ``--reference-python``;
* NIQE: BasicSR's ``calculate_niqe`` from an unpacked BasicSR source tree (``--basicsr DIR``, e.g. the PyPI
  sdist ``basicsr-1.4.2``; it needs NumPy, SciPy, OpenCV and torch in ``--reference-python``). Nothing of it is
  copied into this repository;
* PIQE: ``pypiqe`` (1.2, MATLAB's ``piqe`` ported), importable by ``--reference-python`` with OpenCV; its
  per-image scores were computed for this repository (``benchmarks/reference/``).

Target: >= 10x faster than the reference on the real photos (BRISQUE, NIQE; PIQE has none).

    python benchmarks/no_reference.py [--metrics brisque niqe] [--threads N] [--reference-python PATH] [--basicsr DIR]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sapnet import read_image
from sapnet.metrics import brisque
from sapnet.metrics.niqe import niqe
from sapnet.metrics.piqe import piqe

SHARED = Path(__file__).resolve().parents[2] / "shared"

_BRISQUE_TIMER = """
import sys, time
import numpy as np
from PIL import Image
from brisque import BRISQUE
images = [np.asarray(Image.open(f).convert("RGB")) for f in sys.argv[2:]]
model = BRISQUE(url=False)
t0 = time.perf_counter()
for im in images:
    model.score(im)
print((time.perf_counter() - t0) / len(images))
"""

# BasicSR's package __init__ imports its whole training stack: load the four modules NIQE needs by path instead.
_NIQE_TIMER = """
import importlib.util, sys, time, types
import cv2
root = sys.argv[1]
for pkg in ("basicsr", "basicsr.utils", "basicsr.metrics"):
    sys.modules[pkg] = types.ModuleType(pkg)
def load(name):
    spec = importlib.util.spec_from_file_location(name, f"{root}/{name.replace('.', '/')}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[name] = mod; spec.loader.exec_module(mod); return mod
load("basicsr.utils.registry")
color = load("basicsr.utils.color_util")
sys.modules["basicsr.utils"].bgr2ycbcr = color.bgr2ycbcr
load("basicsr.utils.matlab_functions")
load("basicsr.metrics.metric_util")
niqe = load("basicsr.metrics.niqe")
images = [cv2.imread(f) for f in sys.argv[2:]]
t0 = time.perf_counter()
for im in images:
    niqe.calculate_niqe(im, 0, input_order="HWC", convert_to="y")
print((time.perf_counter() - t0) / len(images))
"""


_PIQE_TIMER = """
import sys, time
import cv2
from pypiqe import piqe
images = [cv2.imread(f) for f in sys.argv[2:]]
t0 = time.perf_counter()
for im in images:
    piqe(im)
print((time.perf_counter() - t0) / len(images))
"""


@dataclass(frozen=True)
class Metric:
    score: Callable[[torch.Tensor], torch.Tensor]
    column: str  # of the reference CSVs, named <metric>_reference*.csv
    tolerance: float  # per image
    mean_tolerance: float
    recorded_reference_seconds: float  # per SIRR photo, on this CPU (shared/data/README.md, earlier runs)
    timer: str
    speed_target: float | None = 10.0  # required speed-up on the SIRR photos (None: none set)


METRICS = {
    "brisque": Metric(brisque, "brisque", 1.0, 0.3, 0.46, _BRISQUE_TIMER),
    "niqe": Metric(niqe, "niqe", 0.05, 0.02, 0.27, _NIQE_TIMER),
    "piqe": Metric(piqe, "piqe", 0.1, 0.01, 0.29, _PIQE_TIMER, speed_target=None),
}
SETS = {  # name -> (image folder and reference CSV under shared/data, else our own reference CSV)
    "SIRR_real": ("SIRR_real/rain", "SIRR_real/{metric}_reference.csv", "{metric}_SIRR_real.csv"),
    "Rain100L rainy": ("Rain100L/rain", "Rain100L/{metric}_reference_rain.csv", "{metric}_Rain100L_rain.csv"),
}
OWN_REFERENCES = Path(__file__).resolve().parent / "reference"


def reference_csv(shared: Path, metric: str, set_name: str) -> Path:
    """Where the reference scores of ``metric`` on a set are: ../shared/data, else benchmarks/reference."""
    _, theirs, ours = SETS[set_name]
    path = shared / "data" / theirs.format(metric=metric)
    return path if path.is_file() else OWN_REFERENCES / ours.format(metric=metric)


def reference_seconds(metric: Metric, files: list[Path], python: str, basicsr: Path | None) -> tuple[float, str]:
    """Seconds per image of the reference implementation on ``files``, or the recorded figure when it cannot run."""
    command = [python, "-c", metric.timer, str(basicsr or ""), *map(str, files)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        return metric.recorded_reference_seconds, f"recorded; not runnable with {python}"
    return float(run.stdout.split()[-1]), "timed now"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", nargs="+", choices=sorted(METRICS), default=sorted(METRICS))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--reference-python", default=sys.executable, help="the Python that runs the reference")
    parser.add_argument("--basicsr", type=Path, default=None, help="an unpacked BasicSR source tree (for NIQE)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for name in args.metrics:
        metric = METRICS[name]
        print(f"\n{name.upper()}, sapnet vs reference scores, {args.threads} thread(s)\n")
        print(f"| set | images | within {metric.tolerance} | max abs diff | mean ours | mean reference | s / image |")
        print("|---|---|---|---|---|---|---|")
        sirr: tuple[float, list[Path]] | None = None
        for set_name, (folder, _, _) in SETS.items():
            with reference_csv(args.shared, name, set_name).open(newline="") as f:
                rows = list(csv.DictReader(f))
            key = "file" if "file" in rows[0] else "image"
            files = [args.shared / "data" / folder / r[key] for r in rows]
            images = [read_image(p) for p in files]  # decoding is not part of the metric
            metric.score(images[0])  # warm-up (model parsing, tables)
            t0 = time.perf_counter()
            ours = np.array([metric.score(x).item() for x in images])
            seconds = (time.perf_counter() - t0) / len(images)
            ref = np.array([float(r[metric.column]) for r in rows])
            diff = np.abs(ours - ref)
            print(
                f"| {set_name} | {len(rows)} | {100 * (diff <= metric.tolerance).mean():.1f} % | {diff.max():.3f} | "
                f"{ours.mean():.3f} | {ref.mean():.3f} | {seconds:.4f} |"
            )
            if set_name == "SIRR_real":
                sirr = (seconds, files)
        assert sirr is not None
        ours_s, files = sirr
        ref_s, how = reference_seconds(metric, files, args.reference_python, args.basicsr)
        print(f"\n| SIRR real photos ({len(files)}) | s / image | speed-up |")
        print("|---|---|---|")
        print(f"| reference implementation ({how}) | {ref_s:.3f} | 1.0x |")
        print(f"| sapnet.metrics.{name} | {ours_s:.4f} | {ref_s / ours_s:.1f}x |")
        speed = f">= {metric.speed_target:g}x faster, " if metric.speed_target else "no speed target, "
        print(f"\ntarget: {speed}within {metric.tolerance} on >= 95 % of images, means within {metric.mean_tolerance}")


if __name__ == "__main__":
    main()
