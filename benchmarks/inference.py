"""Inference speed of SAPNet on a 481x321 RGB image (a Rain100L-sized input) on the CPU.

Compares ``sapnet.derain`` (channels_last, in-place activations, zero-state shortcut) with a baseline: a
plain eager NCHW forward of the same weights written the way the reference implementation runs (separate
modules, out-of-place ops, ``torch.no_grad``). Prints seconds per image, achieved GFLOP/s (2 FLOP per
multiply-add, counted from the network's convolutions) and the ratio, and checks the outputs agree.

    python benchmarks/inference.py [--checkpoint PATH] [--threads 2] [--repeats 5]

Without ``--checkpoint`` it uses ``../shared/compat/sapnet_official_rain100h.pth`` when present, else random
weights (the speed is the same).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import sapnet
from sapnet.models import DerainNet

HEIGHT, WIDTH = 321, 481


def conv_macs(model: DerainNet, height: int, width: int) -> int:
    """Multiply-adds of all 3x3 convolutions over the stages (1x1 attention convs act on 1x1 maps)."""
    per_pixel = sum(
        m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    )
    return per_pixel * height * width * model.config.stages


def baseline_forward(model: DerainNet, x: torch.Tensor) -> torch.Tensor:
    """The same function computed the plain way: NCHW, out-of-place ops, every gate from the full state."""
    x0, h, c = x, None, None
    cell = model.cell
    assert cell is not None and hasattr(cell, "forget_gate")
    for _ in range(model.config.stages):
        z = F.relu(model.input_conv(torch.cat((x0, x), 1)))
        if h is None:
            h, c = torch.zeros_like(z), torch.zeros_like(z)
        u = torch.cat((z, h), 1)
        i = torch.sigmoid(cell.input_gate(u))
        f = torch.sigmoid(cell.forget_gate(u))
        g = torch.tanh(cell.cell_gate(u))
        o = torch.sigmoid(cell.output_gate(u))
        c = f * c + i * g
        h = o * torch.tanh(c)
        z = h
        for block in model.blocks:
            r = z
            for conv, attn in ((block.conv1, block.attn1), (block.conv2, block.attn2)):
                r = conv(r)
                if not isinstance(attn, torch.nn.Identity):
                    s = F.adaptive_avg_pool2d(r, 1)
                    r = r * torch.sigmoid(attn.expand(F.relu(attn.reduce(s))) + attn.skip(s))
                r = F.relu(r)
            z = F.relu(r + z)
        x = model.output_conv(z) + x0
    return x


def time_it(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up (oneDNN primitive creation, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shared = Path(__file__).resolve().parents[2] / "shared" / "compat" / "sapnet_official_rain100h.pth"
    ckpt = args.checkpoint or (shared if shared.is_file() else None)
    torch.manual_seed(0)
    model = sapnet.load_model(ckpt) if ckpt else sapnet.create_model("sapnet").eval()
    image = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    gflop = 2 * conv_macs(model, HEIGHT, WIDTH) / 1e9

    baseline_model = sapnet.create_model("sapnet").eval()
    baseline_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = baseline_forward(baseline_model, image[None]).clamp(0, 1)[0]
        t_base = time_it(lambda: baseline_forward(baseline_model, image[None]), args.repeats)
    ours = sapnet.derain(image, model)
    t_ours = time_it(lambda: sapnet.derain(image, model), args.repeats)
    max_diff = (ours - expected).abs().max().item()

    base, fast = statistics.median(t_base), statistics.median(t_ours)
    print(f"SAPNet, {WIDTH}x{HEIGHT} RGB, float32, CPU, {args.threads} threads, weights: {ckpt or 'random'}")
    print(f"network: {gflop / 2:.1f} G multiply-adds ({gflop:.1f} GFLOP) per image; median of {args.repeats}")
    print()
    print("| path | s / image | GFLOP/s | time vs baseline |")
    print("|---|---|---|---|")
    print(f"| baseline: eager NCHW forward | {base:.3f} | {gflop / base:.1f} | 1.00x |")
    print(f"| sapnet.derain | {fast:.3f} | {gflop / fast:.1f} | {fast / base:.2f}x |")
    print()
    print(f"speed-up {base / fast:.2f}x; max |derain - baseline| = {max_diff:.2e} (target <= 1e-4)")
    if max_diff > 1e-4:
        raise SystemExit("outputs differ by more than 1e-4")


if __name__ == "__main__":
    main()
