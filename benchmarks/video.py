"""Video deraining benchmark: every temporal mode on synthetic clips with ground truth and on real rainy clips.

    python benchmarks/video.py [--model sapnet.rain100h] [--modes frame fuse lowrank recurrent] [--window 5]
                               [--clips 8] [--frames 12] [--size 256 256] [--presets light heavy]
                               [--real-frames 20] [--threads 2] [--out results/video_benchmark]

1. **Synthetic clips with ground truth**, one set per rain preset of ``--presets``: ``--clips`` clips of
   ``--frames`` frames rendered by :func:`sapnet.video.build_video_set` (the camera kinds pan, zoom, shake, static
   in turn; seed 0) on the BSDS500 *test* photos of ``../shared/data/clean_corpus`` (never the Rain100L /
   Rain100H backgrounds), into ``OUT/synthetic_<preset>/clips`` (reused when present). Scored by
   :func:`sapnet.evaluation.evaluate_video`: PSNR / SSIM, warping error and tOF against the clean clips, NIQE,
   seconds per frame; then the same means per camera kind from its per-frame CSV.
2. **Real clips** (``../shared/data/video``, no ground truth): flicker and NIQE on the first ``--real-frames``
   frames of each clip, plus ``OUT/real/time_strip.png``: a crop of consecutive frames, rainy / frame / fuse.

Each network mode runs with ``--model``; ``lowrank`` also runs without a network (the row ``lowrank-only``).
Then it prints the targets of issue 13 item 7, measured, side by side with what they compare to, as ratios:

- each synthetic set, ``fuse`` against ``frame``: PSNR >= +0.5 dB and warping error <= 0.7x;
- real clips, ``fuse`` against ``frame``: flicker <= 0.7x, NIQE not higher;
- the static-camera clips of each synthetic set, ``lowrank`` with no network against the rainy input: PSNR >= +3 dB.

All tables, per-frame CSVs and strips go to ``--out``; ``OUT/targets.md`` holds the target table.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import sapnet
from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.methods import Method
from sapnet.evaluation.tables import markdown_table
from sapnet.evaluation.video import VideoEvaluationResult, evaluate_video, find_clips
from sapnet.video import MODES, VideoDerainer, build_video_set, read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared"
NET = "SAPNet"
LOWRANK_ONLY = "lowrank-only"


@dataclass
class Target:
    """One target: what is measured, the figure it is compared with, the measured ratio or difference."""

    what: str
    measured: float
    baseline: float
    needed: str
    met: bool
    kind: str  # "ratio" or "difference"

    def row(self) -> list[str]:
        change = self.measured / self.baseline if self.kind == "ratio" else self.measured - self.baseline
        shown = f"{change:.3f}x" if self.kind == "ratio" else f"{change:+.2f} dB"
        return [
            self.what,
            f"{self.measured:.4g}",
            f"{self.baseline:.4g}",
            shown,
            self.needed,
            "met" if self.met else "MISSED",
        ]


def row_values(result: VideoEvaluationResult, method: str, mode: str = "") -> dict[str, float]:
    for row in result.rows:
        if row.method == method and row.mode == mode:
            return row.values
    raise KeyError(f"no row {method} ({mode}) in the result")


def per_kind_table(per_frame: Path, metrics: Sequence[str]) -> tuple[str, dict[tuple[str, str, str], dict[str, float]]]:
    """Means per camera kind (the clip name's last ``_`` part) from an evaluation's ``per_frame.csv``."""
    sums: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with per_frame.open() as f:
        for rec in csv.DictReader(f):
            key = (rec["clip"].rsplit("_", 1)[-1], rec["method"], rec["mode"])
            for m in metrics:
                if rec.get(m):
                    sums[key][m] += float(rec[m])
                    counts[key][m] += 1
    means = {k: {m: sums[k][m] / counts[k][m] for m in sums[k]} for k in sums}
    rows = []
    for (kind, method, mode), values in sorted(means.items()):
        label = f"{method} ({mode})" if mode else method
        rows.append([kind, label, *[f"{values[m]:.4g}" if m in values else "-" for m in metrics]])
    return markdown_table(["camera", "method", *metrics], rows), means


def time_strip(clip_rain: Path, model: torch.nn.Module, out: Path, frames: int = 4, window: int = 5) -> None:
    """Consecutive frames of one clip (rows; a 200x150 crop from the centre) in columns rainy / ``frame`` /
    ``fuse``: a residual streak that comes and goes in ``frame`` is what ``fuse`` should remove."""
    first = window // 2
    rainy = [f for _, f in zip(range(frames + window - 1), read_frames(clip_rain), strict=False)]
    versions = {"rainy": rainy}
    for mode in ("frame", "fuse"):
        derainer = VideoDerainer(model, mode, window=None if mode == "frame" else window)
        versions[mode] = [o.clamp(0, 1) for o in derainer.run(rainy)]
    h, w = rainy[0].shape[-2:]
    ch, cw = min(150, h), min(200, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    rows = [
        [v[t][:, top : top + ch, left : left + cw] for v in versions.values()] for t in range(first, first + frames)
    ]
    titles = [f"{name} (frames {first + 1}-{first + frames}, top to bottom)" for name in versions]
    comparison_grid(rows, titles, cell_width=300).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sapnet.rain100h", help="registry name or checkpoint of the network")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--clean", type=Path, default=SHARED / "data" / "clean_corpus" / "bsds500_test200")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"))
    parser.add_argument("--presets", nargs="+", default=["light", "heavy"], help="a synthetic set per rain preset")
    parser.add_argument("--real", type=Path, default=SHARED / "data" / "video")
    parser.add_argument("--real-frames", type=int, default=20)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/video_benchmark"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = sapnet.load_model(args.model)
    methods = [Method(NET, model)]
    if "lowrank" in args.modes:
        methods.append(Method(LOWRANK_ONLY, None))
    t_start = time.perf_counter()
    targets: list[Target] = []
    report = [f"Network: `{args.model}`; modes {', '.join(args.modes)}; window {args.window}; {args.threads} threads."]

    for preset in [] if args.skip_synthetic else args.presets:
        clips_dir = args.out / f"synthetic_{preset}" / "clips"
        build_video_set(
            args.clean, clips_dir, clips=args.clips, frames=args.frames, size=tuple(args.size), preset=preset
        )
        synth = evaluate_video(
            clips_dir, methods, args.modes, out=args.out / f"synthetic_{preset}", window=args.window, strip_clips=4
        )
        print(synth.markdown)
        per_frame = args.out / f"synthetic_{preset}" / "per_frame.csv"
        kinds, means = per_kind_table(per_frame, ["psnr", "ssim", "warp", "tof"])
        print(kinds)
        report += [
            "",
            f"### Synthetic clips, preset {preset}: {args.clips} clips x {args.frames} frames, "
            f"{args.size[0]}x{args.size[1]}, BSDS500 test photos",
            "",
            synth.markdown,
            "Per camera kind:",
            "",
            kinds,
        ]
        if "frame" in args.modes and "fuse" in args.modes:
            frame, fuse = row_values(synth, NET, "frame"), row_values(synth, NET, "fuse")
            gain = fuse["psnr"] - frame["psnr"]
            what = f"{preset}: PSNR, fuse vs frame"
            targets.append(Target(what, fuse["psnr"], frame["psnr"], ">= +0.5 dB", gain >= 0.5, "difference"))
            ratio = fuse["warp"] / frame["warp"]
            what = f"{preset}: warping error, fuse / frame"
            targets.append(Target(what, fuse["warp"], frame["warp"], "<= 0.7x", ratio <= 0.7, "ratio"))
        if "lowrank" in args.modes and ("static", "Rainy", "") in means:
            rainy = means[("static", "Rainy", "")]["psnr"]
            alone = means[("static", LOWRANK_ONLY, "lowrank")]["psnr"]
            what = f"{preset}, static clips: PSNR, lowrank alone vs rainy"
            targets.append(Target(what, alone, rainy, ">= +3 dB", alone - rainy >= 3, "difference"))

    if not args.skip_real:
        real = evaluate_video(
            find_clips(args.real),
            methods,
            args.modes,
            ["flicker", "niqe"],
            out=args.out / "real",
            window=args.window,
            frames=args.real_frames,
            strip_clips=3,
        )
        print(real.markdown)
        report += [
            "",
            f"### Real clips (`../shared/data/video`, first {args.real_frames} frames of each)",
            "",
            real.markdown,
        ]
        if "frame" in args.modes and "fuse" in args.modes:
            frame, fuse = row_values(real, NET, "frame"), row_values(real, NET, "fuse")
            ratio = fuse["flicker"] / frame["flicker"]
            targets.append(
                Target(
                    "real flicker, fuse / frame", fuse["flicker"], frame["flicker"], "<= 0.7x", ratio <= 0.7, "ratio"
                )
            )
            targets.append(
                Target(
                    "real NIQE, fuse vs frame",
                    fuse["niqe"],
                    frame["niqe"],
                    "not higher",
                    fuse["niqe"] <= frame["niqe"],
                    "ratio",
                )
            )
        first = find_clips(args.real)[0]
        time_strip(first.rain, model, args.out / "real" / "time_strip.png", window=args.window)

    table = markdown_table(["target", "measured", "baseline", "change", "needed", "result"], [t.row() for t in targets])
    report += [
        "",
        "### Targets (issue 13, item 7)",
        "",
        table,
        "",
        f"Total time: {time.perf_counter() - t_start:.0f} s.",
    ]
    text = "\n".join(report) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "targets.md").write_text(text)
    print(f"report: {args.out / 'targets.md'}")


if __name__ == "__main__":
    main()
