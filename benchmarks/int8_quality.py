"""What int8 costs: a derain network in PyTorch, in ONNX Runtime float32 and int8, on Rain100L pairs.

    python benchmarks/int8_quality.py [--model sapnet.rain100h] [--dataset DIR] [--calibrate DIR]
                                      [--calibration-size 128 128] [--calibration-images N] [--method minmax]
                                      [--limit N] [--threads 1] [--out DIR]

The network is exported once (dynamic shapes) and quantised with :func:`sapnet.deploy.quantize_int8` on the
images of ``--calibrate`` (default ``../shared/data/RainTrainH_sample/rain``: training rain, not the test set).
Each of the three is run by ``sapnet.derain`` on every test image; the outputs are scored as the deraining
literature does (saved as 8-bit, truncated; Y-channel PSNR / SSIM against the clean image) and int8 also
against the float32 ONNX output. Prints the table, seconds per image for each, and whether int8 is within
0.1 dB PSNR of float (the condition for shipping it). The two ``.onnx`` files stay in ``--out``
(default ``results/int8``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import sapnet
from sapnet.data import read_image
from sapnet.data.image import quantize_8bit
from sapnet.data.listing import list_images
from sapnet.deploy import export_onnx, quantize_int8
from sapnet.metrics import psnr, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared"
MAX_LOSS_DB = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sapnet.rain100h", help="registry name or checkpoint")
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "Rain100L", help="rain/ and clean/")
    parser.add_argument("--calibrate", type=Path, default=SHARED / "data" / "RainTrainH_sample" / "rain")
    parser.add_argument("--calibration-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    parser.add_argument("--calibration-images", type=int, default=None, metavar="N")
    parser.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    parser.add_argument("--limit", type=int, default=None, help="first N test pairs only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/int8"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = sapnet.load_model(args.model)
    float_path = export_onnx(model, args.out / "float.onnx", dynamic=True, source=args.model).path
    t0 = time.perf_counter()
    int8_path = quantize_int8(
        float_path,
        args.out / "int8.onnx",
        args.calibrate,
        size=(args.calibration_size[0], args.calibration_size[1]),
        limit=args.calibration_images,
        method=args.method,
    )
    print(f"quantised in {time.perf_counter() - t0:.1f} s: {sapnet.deploy.read_metadata(int8_path)['quantization']}")

    runs = {
        "torch float32": (model, "torch"),
        "onnxruntime float32": (float_path, "onnxruntime"),
        "onnxruntime int8": (int8_path, "onnxruntime"),
    }
    scores: dict[str, dict[str, list[float]]] = {name: {"psnr": [], "ssim": [], "s": []} for name in runs}
    int8_vs_float: list[float] = []
    rainy_files = list_images(args.dataset / "rain")[: args.limit]
    for rainy_file in rainy_files:
        rainy = read_image(rainy_file)
        clean = read_image(args.dataset / "clean" / rainy_file.name)[None]
        outputs = {}
        for name, (net, backend) in runs.items():
            sapnet.derain(rainy[:, :32, :32], net, backend=backend)  # warm-up (and the session, built once)
            t = time.perf_counter()
            out = sapnet.derain(rainy, net, backend=backend, tile=0)
            scores[name]["s"].append(time.perf_counter() - t)
            outputs[name] = quantize_8bit(out[None], "floor")
            scores[name]["psnr"].append(float(psnr(outputs[name], clean)))
            scores[name]["ssim"].append(float(ssim(outputs[name], clean)))
        int8_vs_float.append(float(psnr(outputs["onnxruntime int8"], outputs["onnxruntime float32"])))

    mean = statistics.fmean
    print(f"\n{args.model} on {len(rainy_files)} pairs of {args.dataset.name}, {args.threads} thread(s):\n")
    print("| run | Y-PSNR | Y-SSIM | s / image |")
    print("|---|---|---|---|")
    for name, s in scores.items():
        print(f"| {name} | {mean(s['psnr']):.3f} | {mean(s['ssim']):.4f} | {statistics.median(s['s']):.3f} |")
    loss = mean(scores["onnxruntime float32"]["psnr"]) - mean(scores["onnxruntime int8"]["psnr"])
    ssim_loss = mean(scores["onnxruntime float32"]["ssim"]) - mean(scores["onnxruntime int8"]["ssim"])
    speed = statistics.median(scores["onnxruntime int8"]["s"]) / statistics.median(scores["onnxruntime float32"]["s"])
    print(f"\nint8 against float32 ONNX: {mean(int8_vs_float):.2f} dB PSNR (Y) between the outputs;")
    print(f"int8 loses {loss:.3f} dB PSNR and {ssim_loss:.4f} SSIM against ground truth; time x{speed:.2f}")
    verdict = "keep int8" if loss <= MAX_LOSS_DB else "do not ship int8"
    print(f"{verdict} (the limit is a loss of {MAX_LOSS_DB} dB)")


if __name__ == "__main__":
    main()
