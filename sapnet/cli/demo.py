"""``sapnet demo`` (``make demo``): the main job end to end on the embedded demo set, in a few CPU minutes.

1. builds the embedded demo set (procedural clean images + heavy synthetic rain, no download);
2. trains SAPNet on it for a few hundred steps (``sapnet train``, SSIM term only: the other three SAPNet losses
   need ImageNet backbones, which this demo does not download; ``train.py --backbones random`` runs them all);
3. evaluates Rainy vs the trained model (and sapnet's default published weights, when they can be had: from
   ``--shared``'s ``compat/`` folder, ``$SAPNET_WEIGHTS_DIR`` or the cache) on the demo test images: a PSNR /
   SSIM table and a before/after grid;
4. when the project's shared data is present, also derains a few real Rain100L images with the default weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import sapnet
from sapnet.data import demo_dataset, list_images
from sapnet.evaluation import Method, comparison_grid, evaluate
from sapnet.models import DEFAULT_MODEL, DerainNet, WeightsError
from sapnet.training import TrainConfig, Trainer


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="train briefly on the embedded demo set, evaluate, and write before/after grids",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("results/demo"), help="output folder")
    p.add_argument("--steps", type=int, default=120, help="training steps (default 120: a few CPU minutes)")
    p.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder (optional)")
    p.add_argument("--images", type=int, default=4, help="real Rain100L images to derain when --shared exists")
    p.set_defaults(run=run)
    return p


def _train(data: Path, out: Path, steps: int) -> Path:
    config = TrainConfig()
    for key, value in {
        "data.train": str(data / "train"),
        "data.val": str(data / "test"),
        "data.patch": 64,
        "data.batch_size": 4,
        "data.workers": 0,
        "loss.ubs": 0.0,
        "loss.contrastive": 0.0,
        "loss.lpips": 0.0,
        "optim.lr_decay": False,
        "run.out": str(out),
        "run.max_steps": steps,
        "run.val_every": 10,
        "run.log_every": 10,
    }.items():
        config.set(key, value, source="demo")
    result = Trainer(config, overwrite=True).fit()  # a demo is rerun into the same folder
    assert result.best is not None
    return result.best


def _default_model(shared: Path) -> DerainNet | None:
    """The default published weights, from ``shared/compat`` first (no download needed), else as usual."""
    mirror = shared / "compat"
    try:
        return sapnet.load_model(DEFAULT_MODEL, weights_dir=mirror if mirror.is_dir() else None)
    except WeightsError as e:
        print(f"(default weights {DEFAULT_MODEL} not available: {e})")
        return None


def _real_images(shared: Path, model: DerainNet | None, out: Path, count: int) -> None:
    rain100l = shared / "data" / "Rain100L"
    if model is None or not (rain100l / "rain").is_dir():
        print(f"(no default weights or no {rain100l}: skipping the real-image part)")
        return
    rows = []
    for rainy_path in list_images(rain100l / "rain")[:count]:
        rainy = sapnet.read_image(rainy_path)
        derained = sapnet.derain(rainy, model)
        sapnet.write_image(derained, out / rainy_path.name)
        rows.append([rainy, derained, sapnet.read_image(rain100l / "clean" / rainy_path.name)])
    grid = out / "grid.png"
    comparison_grid(rows, ["rainy", DEFAULT_MODEL, "clean"]).save(grid)
    print(f"real Rain100L images derained with {DEFAULT_MODEL}: {out}, grid {grid}")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    data = demo_dataset()
    print(f"[1/4] demo data set (procedural images + synthetic heavy rain, not a benchmark): {data}")

    print(f"[2/4] training SAPNet for {args.steps} steps on {data / 'train'} (SSIM loss)")
    best = _train(data, args.out / "train", args.steps)

    print("[3/4] evaluating on the demo test images")
    methods: list[str | Method] = [Method("SAPNet (demo-trained)", model=sapnet.load_model(best))]
    default = _default_model(args.shared)
    if default is not None:
        methods.append(Method(f"{DEFAULT_MODEL} (published)", model=default))
    result = evaluate(
        methods, [f"demo={data / 'test'}"], ["psnr", "ssim"], args.out / "eval", progress=False, grid_images=4
    )
    print(result.files["md"].read_text())

    print("[4/4] real rainy images")
    _real_images(args.shared, default, args.out / "real", args.images)

    print()
    print(f"done in {time.perf_counter() - t0:.0f} s; everything is under {args.out}:")
    print(f"  training run (checkpoints, log.csv, curves.png): {args.out / 'train'}")
    print(f"  table: {result.files['md']}")
    print(f"  before/after grid (rainy | trained | clean): {result.files['grid_demo']}")
    return 0 if not any(r.skipped for r in result.records) else 1
