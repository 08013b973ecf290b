"""Does deraining help a detector? YOLOX-Nano (ONNX) on Rain100L: rainy, derained by each public checkpoint, clean.

    python benchmarks/downstream.py [--dataset DIR] [--detector FILE.onnx] [--compat DIR] [--limit N]
                                    [--threads 2] [--out DIR]

Defaults: the 100 Rain100L test pairs, the YOLOX-Nano COCO export of ``../shared/models`` and every ``*.pth`` of
``../shared/compat`` (the public SAPNet and PReNet checkpoints) as derain methods. Rain100L has no object
annotations, so the ground truth is PSEUDO ground truth: YOLOX's own detections on the clean images with score
>= 0.3 (its Clean column is 1 by construction). COCO box mAP through pycocotools; detections with score >= 0.01,
class-wise NMS at IoU 0.65 (YOLOX's COCO evaluation settings). Prints the table (the layout of SAPNet's Table 5)
and the time spent deraining and detecting; the table, a grid with the detections drawn, CSV and JSON go to
``--out`` (default ``results/downstream_rain100l``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sapnet.downstream import create_detector, evaluate_downstream, load_downstream_set

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "Rain100L")
    parser.add_argument("--detector", type=Path, default=SHARED / "models" / "yolox_nano_coco" / "yolox_nano.onnx")
    parser.add_argument("--compat", type=Path, default=SHARED / "compat")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/downstream_rain100l"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    methods = [f"{p.stem}={p}" for p in sorted(args.compat.glob("*.pth"))]
    data = load_downstream_set(args.dataset, "detection", name="Rain100L", pseudo_gt=True, limit=args.limit)
    detector = create_detector(args.detector)
    t0 = time.perf_counter()
    result = evaluate_downstream(data, detector, methods, args.out)
    total = time.perf_counter() - t0
    print(result.markdown())
    n = result.images
    print(f"{n} images, {len(result.columns)} columns, {args.threads} threads:")
    print(f"- deraining ({len(methods)} networks): {result.seconds['derain']:.1f} s")
    print(f"- detection ({len(result.columns)} x {n} images): {result.seconds['model']:.1f} s")
    print(f"- total: {total:.1f} s")
    for kind, path in result.files.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
