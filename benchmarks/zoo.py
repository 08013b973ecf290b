"""Score every registry weights entry: Rain100L PSNR / SSIM, real-photo BRISQUE, seconds per image on this CPU.

    python benchmarks/zoo.py [--models 'prenet*'] [--rain100l-limit N] [--real-limit N] [--threads 2] [--force]
    python benchmarks/zoo.py --timing     # seconds per 481x321 image only (run it on an otherwise idle machine)

Each entry is run through ``sapnet.evaluation.evaluate`` (the literature's protocol: outputs quantised as saved
PNGs, Y-channel PSNR / SSIM) on ``../shared/data/Rain100L`` and BRISQUE on ``../shared/data/SIRR_real`` (real
rainy photos, no ground truth). The weights come from ``SAPNET_WEIGHTS_DIR`` (default ``../shared/compat``).
Results are written to ``sapnet/models/zoo_scores.json`` after each entry and data set, so an interrupted run
continues where it stopped (``--force`` measures again); the registry and ``sapnet models --pretrained`` read
that file. The Markdown table printed at the end goes into ``benchmarks/RESULTS.md``; published figures are
listed beside the measured ones, marked as published.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sapnet import derain, read_image
from sapnet.cli.models import score_cell
from sapnet.evaluation import RAINY, Method, evaluate
from sapnet.models import WEIGHTS, create_model
from sapnet.models.registry import SCORES_FILE

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASETS = {
    "rain100l": ("Rain100L", SHARED / "data" / "Rain100L", ("psnr", "ssim")),
    "sirr_real": ("SIRR_real", SHARED / "data" / "SIRR_real", ("brisque",)),
}


def _load() -> dict[str, Any]:
    if SCORES_FILE.is_file():
        return json.loads(SCORES_FILE.read_text(encoding="utf-8"))
    return {"models": {}, "inputs": {}}


def _save(data: dict[str, Any]) -> None:
    tmp = SCORES_FILE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, SCORES_FILE)


def measure(name: str, key: str, limit: int | None) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(scores of the entry, scores of the rainy inputs, seconds per image of the network)."""
    label, root, metrics = DATASETS[key]
    model = create_model(name, pretrained=True)
    result = evaluate([Method(name, model=model)], [f"{label}={root}"], metrics, limit=limit, progress=True, log=print)
    by_method = {r.method: r for r in result.records if r.dataset == label}
    rec, rainy = by_method[name], by_method[RAINY]
    scores = {"n": rec.n, **{k: round(v, 4) for k, v in rec.values.items()}}
    inputs = {"n": rainy.n, **{k: round(v, 4) for k, v in rainy.values.items()}}
    return scores, inputs, result.model_seconds / max(rec.n, 1)


def time_entry(name: str, repeats: int = 3) -> float:
    """Median wall time of ``sapnet.derain`` on the first Rain100L image (481x321), after one warm-up run."""
    image = read_image(sorted((DATASETS["rain100l"][1] / "rain").glob("*.png"))[0])
    model = create_model(name, pretrained=True)
    derain(image, model)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        derain(image, model)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(data: dict[str, Any]) -> str:
    lines = [
        "| weights | params | trained on | Rain100L PSNR / SSIM (measured) | SIRR real BRISQUE (measured, lower "
        "is better) | s / image (481x321) | published (authors' test set) |",
        "|---|---|---|---|---|---|---|",
    ]
    inputs = data.get("inputs", {})
    lines.append(
        f"| rainy input | - | - | {score_cell(inputs.get('rain100l', {}), 'psnr', 'ssim')} | "
        f"{score_cell(inputs.get('sirr_real', {}), 'brisque')} | - | - |"
    )
    for name, entry in WEIGHTS.items():
        m = data["models"].get(name, {})
        published = "; ".join(f"{p.dataset} {p.psnr:.2f} / {p.ssim:.3f}" for p in entry.published) or "-"
        seconds = m.get("seconds_per_image", {}).get("rain100l_481x321")
        rain100l = score_cell(m.get("rain100l", {}), "psnr", "ssim")
        lines.append(
            f"| `{name}` | {entry.params:,} | {entry.trained_on} | {rain100l} | "
            f"{score_cell(m.get('sirr_real', {}), 'brisque')} | {f'{seconds:.2f}' if seconds else '-'} | {published} |"
        )
    return "\n".join(lines)


def _machine(threads: int) -> dict[str, str]:
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {threads} threads",
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="*", help="fnmatch pattern of registry names (default: all)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rain100l-limit", type=int, default=None, help="first N Rain100L pairs (default: all)")
    parser.add_argument("--real-limit", type=int, default=None, help="first N real photos (default: all 147)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="measure again what was already measured")
    parser.add_argument("--table", action="store_true", help="only print the table of what was measured")
    parser.add_argument("--timing", action="store_true", help="only time each entry on one 481x321 image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("SAPNET_WEIGHTS_DIR", str(SHARED / "compat"))
    data = _load()
    if args.timing:
        for name in WEIGHTS:
            if fnmatch.fnmatchcase(name, args.models):
                seconds = time_entry(name)
                data["models"].setdefault(name, {}).setdefault("seconds_per_image", {})["rain100l_481x321"] = round(
                    seconds, 3
                )
                data["timing"] = _machine(args.threads)
                _save(data)
                print(f"{name}: {seconds:.2f} s per 481x321 image", flush=True)
    elif not args.table:
        limits = {"rain100l": args.rain100l_limit, "sirr_real": args.real_limit}
        for key in args.datasets:
            for name in WEIGHTS:
                if not fnmatch.fnmatchcase(name, args.models):
                    continue
                done = data["models"].get(name, {}).get(key)
                wanted_n = limits[key]
                if done and not args.force and (wanted_n is None or done["n"] >= wanted_n):
                    continue
                print(f"== {name} on {key} (limit {limits[key]})", flush=True)
                scores, inputs, seconds = measure(name, key, limits[key])
                entry = data["models"].setdefault(name, {})
                entry[key] = scores
                entry.setdefault("seconds_per_image", {})[key] = round(seconds, 3)
                data.setdefault("inputs", {})[key] = inputs
                data["measured"] = _machine(args.threads)
                _save(data)
                print(f"   {scores}  {seconds:.2f} s/image", flush=True)
    print(table(data))


if __name__ == "__main__":
    main()
