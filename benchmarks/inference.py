"""CPU inference speed of SAPNet against the published reference code: PyTorch, ONNX Runtime float32 and int8.

    python benchmarks/inference.py [--threads 2] [--repeats 3] [--sizes 481x321 4000x3000] [--rows ...]
                                   [--tile 448] [--tile-sweep] [--out results/inference]

The baseline is the published SAPNet network code itself, ``../shared/reference/sapnet_official/network.py``
(MIT; see its PROVENANCE.md), imported from there at run time (never copied here) and run as its authors run it:
``SAPNet()`` with the public checkpoint ``../shared/compat/sapnet_official_rain100h.pth`` (``module.`` prefix
stripped), NCHW, ``torch.no_grad()``. Rows, each timed in a fresh process (so its peak resident memory is its
own):

- ``reference``: that code (at 4000x3000 over the same tiles as sapnet, :func:`sapnet.inference.tiled_apply`);
- ``torch``: ``sapnet.derain`` with the same weights;
- ``onnxruntime``: ``sapnet.derain(..., backend="onnxruntime")`` on the float32 export (dynamic shapes);
- ``int8``: the same on the int8 export (:func:`sapnet.deploy.quantize_int8`, calibrated on 16 crops of
  ``../shared/data/RainTrainH_sample/rain``: training rain, not the test image).

Inputs: Rain100L rainy image 001 (481x321; its clean image gives each row's Y-PSNR) and a real rainy photo of
``../shared/data/SIRR_real`` resized to 4000x3000 (tiled: ``--tile``, overlap 32). Prints seconds (median of
``--repeats`` after a warm-up; one run at 4000x3000), GFLOP/s (the 3x3 convolutions' 2 x multiply-adds over the
image's pixels, tiles' overlap not counted), peak RSS, the time as a ratio to the reference, and each output's
largest difference from the reference's. Targets (issue 16): float <= 0.4x the reference at 481x321 with outputs
within 1e-4; 4000x3000 in <= 120 s; int8 <= 0.5x the float ONNX Runtime time if it stays within 0.1 dB.

``--tile-sweep`` first times ``sapnet.derain`` on a 1792x1344 crop of the large photo with tiles of 448 to 1344
pixels (overlap 32) and whole: seconds per megapixel, the cost of the overlap, and PSNR against the whole crop
(RGB, outputs clamped to [0, 1]; the tiling target is >= 50 dB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import sapnet
from sapnet.data import read_image
from sapnet.inference import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, tiled_apply
from sapnet.metrics import psnr
from sapnet.models import DerainNet

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference" / "sapnet_official" / "network.py"
CHECKPOINT = SHARED / "compat" / "sapnet_official_rain100h.pth"
SMALL = SHARED / "data" / "Rain100L" / "rain" / "001.png"
SMALL_CLEAN = SHARED / "data" / "Rain100L" / "clean" / "001.png"
LARGE_SOURCE = SHARED / "data" / "SIRR_real" / "rain"
CALIBRATION = SHARED / "data" / "RainTrainH_sample" / "rain"
ROWS = ("reference", "torch", "onnxruntime", "int8")
SIZES = {"481x321": (321, 481), "4000x3000": (3000, 4000)}


def conv_macs_per_pixel(model: DerainNet) -> int:
    """Multiply-adds per pixel of all 3x3 convolutions over the stages (the 1x1 attention convs act on 1x1 maps)."""
    per_stage = sum(
        m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    )
    return per_stage * model.config.stages


def reference_network() -> torch.nn.Module:
    """The published SAPNet code with the public weights, from ``../shared/reference`` (not part of sapnet)."""
    spec = importlib.util.spec_from_file_location("sapnet_official_network", REFERENCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.SAPNet()
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return net.eval()


def test_image(size: str) -> torch.Tensor:
    if size == "481x321":
        return read_image(SMALL)
    photo = read_image(sorted(LARGE_SOURCE.iterdir())[0])
    h, w = SIZES[size]
    return F.interpolate(photo[None], size=(h, w), mode="bilinear", antialias=True)[0].clamp(0, 1)


def runner(row: str, image: torch.Tensor, tile: int, onnx_dir: Path) -> Callable[[], torch.Tensor]:
    """A function deraining ``image`` (3, H, W) the row's way; tiles of ``tile`` beyond 4 megapixels."""
    tiled = image.shape[-1] * image.shape[-2] > 4_000_000
    if row == "reference":
        ref = reference_network()

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return ref(x)[0]

        if tiled:
            return lambda: tiled_apply(forward, image[None], tile, DEFAULT_TILE_OVERLAP, torch.device("cpu"))[0]
        return lambda: forward(image[None])[0]
    kwargs: dict[str, Any] = {"tile": tile if tiled else 0}
    if row == "torch":
        model: Any = sapnet.load_model(CHECKPOINT)
    else:
        model = onnx_dir / ("sapnet_int8.onnx" if row == "int8" else "sapnet_float.onnx")
        kwargs["backend"] = "onnxruntime"
    return lambda: sapnet.derain(image, model, **kwargs)


def child(row: str, size: str, tile: int, repeats: int, threads: int, onnx_dir: Path, out: Path) -> None:
    """Time one row on one size in this (fresh) process; write its times, peak RSS and output."""
    torch.set_num_threads(threads)
    image = test_image(size)
    run = runner(row, image, tile, onnx_dir)
    large = size != "481x321"
    if large:  # warm-up on one tile (oneDNN primitives, ONNX Runtime's first run)
        runner(row, image[:, :tile, :tile].contiguous(), tile, onnx_dir)()
    else:
        run()
    times, output = [], None
    for _ in range(1 if large else repeats):
        t0 = time.perf_counter()
        output = run()
        times.append(time.perf_counter() - t0)
    assert output is not None
    torch.save(output.clamp(0, 1).contiguous(), out / f"{row}_{size}.pt")
    peak = peak_rss()
    (out / f"{row}_{size}.json").write_text(json.dumps({"times": times, "peak": peak}))


def peak_rss() -> int:
    """This process's peak resident memory in bytes (``VmHWM``: unlike ``ru_maxrss`` it is not inherited from the
    parent across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def export_models(onnx_dir: Path) -> None:
    from sapnet.deploy import export_onnx

    onnx_dir.mkdir(parents=True, exist_ok=True)
    for int8, name in ((False, "sapnet_float.onnx"), (True, "sapnet_int8.onnx")):
        if not (onnx_dir / name).is_file():
            report = export_onnx(
                CHECKPOINT,
                onnx_dir / name,
                dynamic=True,
                int8=int8,
                calibrate=CALIBRATION if int8 else None,
                calibration_limit=16 if int8 else None,
            )
            print(report.summary(), file=sys.stderr)


def tile_sweep(threads: int, tiles: list[int]) -> None:
    torch.set_num_threads(threads)
    model = sapnet.load_model(CHECKPOINT)
    image = test_image("4000x3000")[:, :1344, :1792].contiguous()
    sapnet.derain(image[:, :448, :448], model, tile=0)  # warm-up
    outputs, seconds = {}, {}
    for tile in [*tiles, 0]:  # 0: the whole crop at once, what the tiles should agree with
        t0 = time.perf_counter()
        outputs[tile] = sapnet.derain(image, model, tile=tile)
        seconds[tile] = time.perf_counter() - t0
    megapixels = image.shape[-1] * image.shape[-2] / 1e6
    print(
        f"Tile sweep: sapnet.derain (torch) on a {image.shape[-1]}x{image.shape[-2]} crop, overlap "
        f"{DEFAULT_TILE_OVERLAP}, {threads} threads"
    )
    print()
    print(f"| tile | s | s / megapixel | time vs tile {tiles[0]} | PSNR vs the whole crop |")
    print("|---|---|---|---|---|")
    ref = outputs[0]
    for tile in [*tiles, 0]:
        close = float(psnr(outputs[tile], ref, channel="rgb"))
        ratio = seconds[tile] / seconds[tiles[0]]
        per_mp = seconds[tile] / megapixels
        print(f"| {tile or 'whole'} | {seconds[tile]:.1f} | {per_mp:.2f} | {ratio:.2f}x | {close:.1f} dB |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    parser.add_argument("--tile-sweep", action="store_true")
    parser.add_argument("--sweep-tiles", type=int, nargs="+", default=[448, 640, 896, 1344])
    parser.add_argument("--out", type=Path, default=Path("results/inference"))
    parser.add_argument("--_child", dest="child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    onnx_dir = args.out / "onnx"
    if args.child:
        child(args.child[0], args.child[1], args.tile, args.repeats, args.threads, onnx_dir, args.out)
        return
    if args.tile_sweep:
        tile_sweep(args.threads, args.sweep_tiles)
    args.out.mkdir(parents=True, exist_ok=True)
    if {"onnxruntime", "int8"} & set(args.rows):
        export_models(onnx_dir)

    model = sapnet.load_model(CHECKPOINT)
    macs = conv_macs_per_pixel(model)
    clean = read_image(SMALL_CLEAN)
    print(
        f"SAPNet, public weights, float32 unless int8, CPU, {args.threads} threads; {2 * macs / 1e6:.2f} MFLOP per "
        f"pixel; median of {args.repeats} at 481x321, one run at 4000x3000 (tile {args.tile}, overlap "
        f"{DEFAULT_TILE_OVERLAP})"
    )
    print()
    print("| size | path | s | GFLOP/s | peak RSS | time vs reference | max diff vs reference | Y-PSNR |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        h, w = SIZES[size]
        results: dict[str, dict[str, Any]] = {}
        for row in args.rows:
            cmd = [
                sys.executable,
                __file__,
                "--_child",
                row,
                size,
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--tile",
                str(args.tile),
                "--out",
                str(args.out),
            ]
            subprocess.run(cmd, check=True)
            results[row] = json.loads((args.out / f"{row}_{size}.json").read_text())
            results[row]["output"] = torch.load(args.out / f"{row}_{size}.pt", weights_only=True)
        base = results.get("reference")
        for row, r in results.items():
            seconds = statistics.median(r["times"])
            gflops = 2 * macs * h * w / seconds / 1e9
            ratio = f"{seconds / statistics.median(base['times']):.2f}x" if base else "-"
            diff = f"{float((r['output'] - base['output']).abs().max()):.1e}" if base else "-"
            quality = f"{float(psnr(r['output'], clean)):.2f} dB" if size == "481x321" else "-"
            print(
                f"| {size} | {row} | {seconds:.2f} | {gflops:.0f} | {r['peak'] / 2**30:.2f} GiB | {ratio} | "
                f"{diff} | {quality} |"
            )
        if "onnxruntime" in results and "int8" in results:
            s_float, s_int8 = (statistics.median(results[k]["times"]) for k in ("onnxruntime", "int8"))
            close = float(psnr(results["int8"]["output"], results["onnxruntime"]["output"], channel="rgb"))
            print(
                f"| {size} | int8 / onnxruntime float | {s_int8 / s_float:.2f}x | | | | | RGB PSNR int8 vs float "
                f"{close:.1f} dB |"
            )
        for row in results:
            (args.out / f"{row}_{size}.pt").unlink()


if __name__ == "__main__":
    main()
