"""``sapnet demo``: derain a few real Rain100L images with the public SAPNet checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sapnet
from sapnet.evaluation import comparison_grid


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="derain a few real Rain100L images with the public SAPNet checkpoint",
        description=__doc__,
    )
    p.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    p.add_argument("--out", type=Path, default=Path("results/demo"), help="output folder")
    p.add_argument("--images", type=int, default=4, help="number of Rain100L images")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    checkpoint = args.shared / "compat" / "sapnet_official_rain100h.pth"
    rain100l = args.shared / "data" / "Rain100L"
    rain_dir, clean_dir = rain100l / "rain", rain100l / "clean"
    missing = [p for p in (checkpoint, rain_dir, clean_dir) if not p.exists()]
    if missing:
        print(
            f"demo: needs {', '.join(map(str, missing))} (the project's shared data); pass --shared DIR",
            file=sys.stderr,
        )
        return 2
    model = sapnet.load_model(checkpoint)
    print(f"model: {checkpoint} ({model.source}, {model.config.stages} stages)")
    rows = []
    for rainy_path in sorted(rain_dir.glob("*.png"))[: args.images]:
        rainy = sapnet.read_image(rainy_path)
        derained = sapnet.derain(rainy, model)
        out = sapnet.write_image(derained, args.out / rainy_path.name)
        rows.append([rainy, derained, sapnet.read_image(clean_dir / rainy_path.name)])
        print(f"derained {rainy_path} -> {out}")
    grid = args.out / "grid.png"
    comparison_grid(rows, ["rainy", "SAPNet (public checkpoint)", "clean"]).save(grid)
    print(f"before/after grid: {grid}")
    return 0
