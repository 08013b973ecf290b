"""``sapnet evaluate`` (also ``python evaluate.py``): PSNR / SSIM / BRISQUE tables, methods x datasets; with
``--task detection|segmentation``, a detector's mAP or a segmenter's mIoU / mPA on rainy, derained and clean images;
with ``--task video`` (or ``--video``), temporal derain modes on rainy clips (PSNR / SSIM, warping error / tOF or
flicker, NIQE, seconds per frame); with ``--task segmentation --clips``, a segmenter on rainy clips derained in each
temporal mode (per-frame mIoU / mPA, label instability).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sapnet.cli.arguments import positive_int
from sapnet.data.listing import read_name_list
from sapnet.downstream.models import DEFAULT_DETECTOR, DEFAULT_SEGMENTER
from sapnet.downstream.tasks import TASKS as DOWNSTREAM_TASKS
from sapnet.evaluation import DEFAULT_VIDEO_MODES, VIDEO_METRICS, evaluate
from sapnet.metrics import METRICS, check_metrics
from sapnet.models import DEFAULT_MODEL
from sapnet.video import DEFAULT_WINDOW, MODES

RESTORATION = "restoration"
DOWNSTREAM = tuple(DOWNSTREAM_TASKS)
VIDEO = "video"
TASKS = (RESTORATION, *DOWNSTREAM, VIDEO)


@dataclass(frozen=True)
class TaskOption:
    """An option that only some ``--task`` values use: its flag, those tasks, and its default, or its default for
    a task in ``task_defaults`` (the parser's default is ``None`` / ``False``, so that an option given by hand can
    be told from one left out)."""

    flag: str
    tasks: tuple[str, ...]
    default: Any
    task_defaults: Mapping[str, Any] = field(default_factory=dict)

    def default_for(self, task: str) -> Any:
        return self.task_defaults.get(task, self.default)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score derain methods on benchmark folders (PSNR/SSIM on Y as in the literature, BRISQUE), or "
        "a detector / segmenter on rainy, derained and clean images (--task)",
        description=__doc__
        + " The input row (column) 'Rainy' is always included. Each --task has its own option group below; "
        "the options of the other tasks are refused.",
    )
    options: dict[str, TaskOption] = {}

    def task_option(
        group: argparse._ArgumentGroup,
        tasks: tuple[str, ...],
        *flags: str,
        task_defaults: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        unset = False if kwargs.get("action") == "store_true" else None
        default = kwargs.pop("default", unset)
        action = group.add_argument(*flags, default=unset, **kwargs)
        options[action.dest] = TaskOption(flags[0], tasks, default, dict(task_defaults or {}))

    p.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="restoration: PSNR/SSIM/BRISQUE of the derained images (default); detection / segmentation: a "
        "downstream model's scores on rainy, derained and clean images (SAPNet's Table 5); video: temporal "
        "derain modes on rainy clips (--clips)",
    )
    p.add_argument("--video", action="store_true", help="the same as --task video")
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="[LABEL=]M",
        help="a registry name (e.g. prenet.rain100h; `sapnet models --pretrained` lists them), a checkpoint "
        "file (ours or a public SAPNet/PReNet .pth), or a folder of precomputed outputs of any method "
        "(DIR/<dataset>/<name>.png or DIR/<name>.png); repeatable",
    )
    p.add_argument(
        "--dataset",
        dest="datasets",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a benchmark folder in any supported layout (rain/+clean/, rainy/+norain-*, input/+target/, "
        "NNN_in/NNN_GT, ...) or a folder of real rainy photos; repeatable. Detection / segmentation: one "
        "paired set, or a folder of clean images whose rainy versions are rendered (default: the embedded demo "
        "set's test images, with pseudo ground truth)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for tables, per-image CSV, grids")
    p.add_argument("--device", default=None, help="where networks run (default: cpu)")
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="derain in N x N tiles; 0: whole images (default: as sapnet.derain, whole when the image fits the "
        "default memory budget, else 448 tiles)",
    )
    p.add_argument("--grid-images", type=int, default=4, metavar="K", help="images per comparison grid")
    p.add_argument(
        "--limit", type=positive_int, default=None, metavar="N", help="score the first N images of each dataset"
    )

    g = p.add_argument_group(
        "image scoring (--task restoration, the default)",
        "PSNR / SSIM / BRISQUE / NIQE / PIQE of each method on each dataset (a table methods x datasets, "
        "per-image CSV). Paired folders get PSNR/SSIM (and the no-reference metrics when asked); folders of "
        "real photos get the no-reference metrics.",
    )
    task_option(
        g,
        (RESTORATION, VIDEO),
        "--metrics",
        nargs="+",
        default=["psnr", "ssim"],
        task_defaults={VIDEO: list(VIDEO_METRICS)},
        type=_metric,
        metavar="NAME",
        help=f"any of {', '.join(METRICS)} (default: psnr ssim); --task video: any of {', '.join(VIDEO_METRICS)} "
        "(default: all)",
    )
    task_option(
        g, (RESTORATION,), "--save-outputs", action="store_true", help="write the scored (quantised) outputs as PNG"
    )
    task_option(
        g,
        (RESTORATION,),
        "--images",
        type=Path,
        metavar="LIST.txt",
        help="score only the images named in this file, one file name per line (e.g. the held-out real photos, "
        "datasets/splits/sirr_real_heldout.txt)",
    )

    g = p.add_argument_group(
        "downstream benchmark (--task detection | segmentation)",
        "One table, rows = metrics, columns = Rainy, each method, Clean, on one dataset.",
    )
    task_option(
        g,
        DOWNSTREAM,
        "--weights",
        default="pretrained",
        metavar="pretrained|random|FILE",
        help="torchvision weights: the published ones from the torch hub cache (default), a state-dict file, or "
        "random (to test the plumbing; the scores then mean nothing)",
    )
    task_option(
        g,
        DOWNSTREAM,
        "--pseudo-gt",
        action="store_true",
        help="no annotations: score against the model's own predictions on the clean images (said in the table)",
    )
    task_option(
        g,
        DOWNSTREAM,
        "--rain",
        default="heavy",
        metavar="PRESET",
        help="rain preset for clean-only sets (default heavy)",
    )
    task_option(g, DOWNSTREAM, "--seed", type=int, default=0, help="rain seed for clean-only sets (default 0)")

    g = p.add_argument_group("detection only (--task detection)")
    task_option(
        g,
        ("detection",),
        "--detector",
        default=DEFAULT_DETECTOR,
        metavar="NAME|FILE.onnx",
        help=f"a torchvision detector (default {DEFAULT_DETECTOR}) or a YOLOX ONNX export",
    )
    task_option(
        g, ("detection",), "--annotations", type=Path, metavar="FILE.json", help="COCO-format detection ground truth"
    )
    task_option(
        g,
        ("detection",),
        "--pseudo-gt-threshold",
        type=float,
        default=0.3,
        metavar="S",
        help="clean-image detections with score >= S become pseudo ground truth (default 0.3)",
    )
    task_option(
        g,
        ("detection",),
        "--score-threshold",
        type=float,
        default=0.01,
        metavar="S",
        help="detections kept for mAP (default 0.01)",
    )

    g = p.add_argument_group("segmentation only (--task segmentation)")
    task_option(
        g,
        ("segmentation",),
        "--segmenter",
        default=DEFAULT_SEGMENTER,
        metavar="NAME",
        help=f"a torchvision segmenter ({DEFAULT_SEGMENTER})",
    )
    task_option(
        g, ("segmentation",), "--masks", type=Path, metavar="DIR", help="segmentation ground truth: index-mask PNGs"
    )
    task_option(
        g,
        ("segmentation",),
        "--class-map",
        default="voc",
        metavar="voc|cityscapes|FILE.json",
        help="mask values -> classes (default voc)",
    )

    clip_tasks = (VIDEO, "segmentation")
    g = p.add_argument_group(
        "video deraining (--task video, or --video; --clips, --modes, --window, --frames also for --task "
        "segmentation on clips)",
        "One table, rows = Rainy, each --model in each --modes, Clean (where clips have clean/); columns = PSNR, "
        "SSIM (Y channel, outputs quantised as the image protocol), warping error and tOF against clean/ (flicker "
        "on clips without it), NIQE (per frame), seconds per frame; with per_frame.csv and strip.png (the first "
        f"frame of each version). --model: networks only (no folders of outputs), {DEFAULT_MODEL} when none is given; "
        "--model none: no network (mode lowrank only). "
        "--grid-images: clips in the strip. With --task segmentation --clips DIR: rows = Rainy, each --model in "
        "each --modes, Clean; columns = per-frame mIoU / mPA against each clip's masks/ (read with --class-map) or, "
        "without them (or with --pseudo-gt), the segmenter's labels of its clean/ frames, and label instability "
        "(the fraction of pixels whose label changes from the flow-warped previous frame); per_frame.csv, "
        "per_clip.csv, strip.png.",
    )
    task_option(
        g,
        clip_tasks,
        "--clips",
        type=Path,
        metavar="DIR",
        help="a folder of clips (<clip>/rain/ frames, optional <clip>/clean/, as `sapnet synth --video` writes, "
        "and for --task segmentation optional <clip>/masks/, one index PNG per frame) or one clip folder",
    )
    task_option(
        g,
        clip_tasks,
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=list(DEFAULT_VIDEO_MODES),
        metavar="MODE",
        help=f"temporal modes, each run with each --model: {', '.join(MODES)} (default: "
        f"{' '.join(DEFAULT_VIDEO_MODES)})",
    )
    task_option(
        g,
        clip_tasks,
        "--window",
        type=positive_int,
        metavar="K",
        help=f"frames in the window of fuse and lowrank (odd; default {DEFAULT_WINDOW})",
    )
    task_option(g, clip_tasks, "--frames", type=positive_int, metavar="N", help="score the first N frames of each clip")
    p.set_defaults(run=run, task_options=options)
    return p


def _metric(name: str) -> str:
    if name in VIDEO_METRICS:
        return name  # whether the task scores it is checked once the task is known
    try:
        check_metrics([name])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}; --task video: {', '.join(VIDEO_METRICS)}") from None
    return name


def _left_out(value: object) -> bool:
    return value is None or value is False


def _apply_task_options(args: argparse.Namespace) -> None:
    """Fill in the defaults of the task-specific options that were left out."""
    for dest, option in args.task_options.items():
        if _left_out(getattr(args, dest)):
            setattr(args, dest, option.default_for(args.task))


def _unused_options(args: argparse.Namespace) -> str | None:
    """Why the options given for other tasks than ``args.task`` are refused (``None``: there are none)."""
    unused = [
        o for dest, o in args.task_options.items() if args.task not in o.tasks and not _left_out(getattr(args, dest))
    ]
    if not unused:
        return None
    flags = ", ".join(o.flag for o in unused)
    owners = "; ".join(f"{o.flag} is for --task {' / '.join(o.tasks)}" for o in unused)
    return f"--task {args.task} does not use {flags} ({owners})"


_CLIP_OPTIONS = ("--modes", "--window", "--frames")
_IMAGE_SET_OPTIONS = ("--dataset", "--limit", "--masks", "--rain", "--seed")


def _clip_options_problem(args: argparse.Namespace) -> str | None:
    """``--task segmentation`` scores images (``--dataset``) or clips (``--clips``): why the options of the other
    kind, given by hand, are refused (``None``: none are)."""
    if args.task != "segmentation":
        return None
    given = {
        "--modes": args.modes,
        "--window": args.window,
        "--frames": args.frames,
        "--dataset": args.datasets,
        "--limit": args.limit,
        "--masks": args.masks,
        "--rain": args.rain,
        "--seed": args.seed,
    }
    wrong = _IMAGE_SET_OPTIONS if args.clips is not None else _CLIP_OPTIONS
    flags = [f for f in wrong if not _left_out(given[f]) and given[f] != []]
    if not flags:
        return None
    if args.clips is not None:
        return (
            f"--task segmentation --clips does not use {', '.join(flags)} (clips have their own rain and masks/; "
            "--frames N scores the first N frames of each clip)"
        )
    return f"{', '.join(flags)} apply to clips: --task segmentation --clips DIR"


def _fail(message: str) -> int:
    """Say ``sapnet evaluate: <message>`` on stderr; returns the exit status of a refused command, 2."""
    print(f"sapnet evaluate: {message}", file=sys.stderr)
    return 2


def _log(message: str) -> None:
    """Where the evaluations' messages (methods and clips skipped, and why) go: stderr."""
    print(message, file=sys.stderr)


def _print_files(files: Mapping[str, Path]) -> None:
    """Print each file written, ``<kind>: <path>``."""
    for kind, path in files.items():
        print(f"{kind}: {path}")


def _warn_if_random(model: object, weights: str) -> None:
    """Say on stderr that a torchvision detector or segmenter made with ``--weights random`` tests the plumbing
    only."""
    from sapnet.downstream import TorchvisionDetector, TorchvisionSegmenter

    if weights == "random" and isinstance(model, (TorchvisionDetector, TorchvisionSegmenter)):
        print(f"warning: {model!r} has RANDOM weights: the scores test the plumbing only", file=sys.stderr)


def _clip_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments that ``--task video`` (:func:`sapnet.evaluation.evaluate_video`) and ``--task
    segmentation --clips`` (:func:`sapnet.downstream.evaluate_video_segmentation`) take alike from ``args``."""
    return {
        "window": args.window,
        "frames": args.frames,
        "device": args.device,
        "tile": args.tile,
        "strip_clips": args.grid_images,
        "log": _log,
    }


def run(args: argparse.Namespace) -> int:
    """``--task restoration`` (:func:`run_restoration`), a downstream task (:func:`run_downstream`) or ``video``
    (:func:`run_video`); options of the other tasks exit 2."""
    if args.video and args.task not in (None, VIDEO):
        return _fail(f"--video is --task video, not --task {args.task}")
    args.task = VIDEO if args.video else args.task or RESTORATION
    unused = _unused_options(args) or _clip_options_problem(args)
    if unused is not None:
        return _fail(unused)
    _apply_task_options(args)
    if args.task == RESTORATION:
        return run_restoration(args)
    return run_video(args) if args.task == VIDEO else run_downstream(args)


def run_restoration(args: argparse.Namespace) -> int:
    """``--task restoration``: one table, methods x datasets, of PSNR / SSIM / BRISQUE."""
    if not args.datasets:
        return _fail("--dataset is required (a benchmark folder, NAME=DIR)")
    try:
        check_metrics(args.metrics)
    except ValueError as e:
        return _fail(str(e))
    try:
        images = read_name_list(args.images) if args.images is not None else None
    except (OSError, ValueError) as e:
        return _fail(f"--images: {e}")
    result = evaluate(
        args.models,
        args.datasets,
        args.metrics,
        args.out,
        save_outputs=args.save_outputs,
        device=args.device,
        tile=args.tile,
        grid_images=args.grid_images,
        limit=args.limit,
        images=images,
        log=_log,
    )
    print(result.files["md"].read_text())
    print(f"model time {result.model_seconds:.1f} s, metric time {result.metric_seconds:.1f} s")
    _print_files(result.files)
    skipped = any(r.skipped for r in result.records)
    return 1 if skipped else 0


def run_downstream(args: argparse.Namespace) -> int:
    """``--task detection|segmentation``: one table (rows = metrics, columns = Rainy, methods, Clean)."""
    from sapnet.data import DatasetError, demo_dataset
    from sapnet.data.synthesis import RAIN_PRESETS, UnknownPresetError
    from sapnet.downstream import (
        AnnotationError,
        Detector,
        ModelUnavailableError,
        RandomModelWarning,
        Segmenter,
        create_detector,
        create_segmenter,
        evaluate_downstream,
        load_class_map,
        load_downstream_set,
    )
    from sapnet.evaluation import parse_dataset

    if args.clips is not None:
        return run_video_segmentation(args)
    if len(args.datasets) > 1:
        return _fail(f"--task {args.task} scores one dataset at a time, got {len(args.datasets)}")
    if args.rain not in RAIN_PRESETS:
        return _fail(str(UnknownPresetError(args.rain)))
    pseudo_gt = args.pseudo_gt
    if args.datasets:
        spec = parse_dataset(args.datasets[0])
        name, root = spec.name, spec.root
    else:
        name, root = "demo", demo_dataset() / "test"
        pseudo_gt = True
        print(f"no --dataset: the embedded demo set's test images ({root}), with pseudo ground truth", file=sys.stderr)
    detection = args.task == "detection"
    model: Detector | Segmenter
    try:
        class_map = load_class_map(args.class_map) if args.masks is not None else None
        data = load_downstream_set(
            root,
            args.task,
            name=name,
            annotations=args.annotations if detection else None,
            masks=None if detection else args.masks,
            class_map=class_map,
            pseudo_gt=pseudo_gt,
            limit=args.limit,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomModelWarning)  # said once below, and in the table
            if detection:
                model = create_detector(
                    args.detector,
                    args.weights,
                    score_threshold=args.score_threshold,
                    device=args.device,
                )
            else:
                model = create_segmenter(
                    args.segmenter,
                    args.weights,
                    device=args.device,
                    num_classes=class_map.num_classes if class_map is not None and args.weights == "random" else None,
                )
    except (DatasetError, AnnotationError, ModelUnavailableError, ValueError) as e:
        return _fail(str(e))
    _warn_if_random(model, args.weights)
    try:
        result = evaluate_downstream(
            data,
            model,
            args.models,
            args.out,
            rain=args.rain,
            seed=args.seed,
            pseudo_threshold=args.pseudo_gt_threshold,
            device=args.device,
            tile=args.tile,
            grid_images=args.grid_images,
            log=_log,
        )
    except ValueError as e:
        return _fail(str(e))
    print(result.markdown())
    print(", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()))
    _print_files(result.files)
    return 1 if result.problems or result.images == 0 else 0


def run_video(args: argparse.Namespace) -> int:
    """``--task video``: one table, rows = Rainy, each model in each mode, Clean; see the option group's help."""
    from sapnet.data import DatasetError
    from sapnet.evaluation import check_video_metrics, evaluate_video

    if args.datasets:
        return _fail("--task video scores --clips DIR (a folder of clips or one clip), not --dataset")
    if args.limit is not None:
        return _fail("--task video does not use --limit: --frames N scores the first N frames of each clip")
    if args.clips is None:
        return _fail("--task video needs --clips DIR (a folder of clips, <clip>/rain/ and optional <clip>/clean/)")
    try:
        check_video_metrics(args.metrics)
        result = evaluate_video(
            args.clips,
            args.models or [DEFAULT_MODEL],
            args.modes,
            args.metrics,
            args.out,
            **_clip_options(args),
        )
    except (DatasetError, ValueError) as e:
        return _fail(str(e))
    print(result.markdown)
    _print_files(result.files)
    return 1 if result.skipped else 0


def run_video_segmentation(args: argparse.Namespace) -> int:
    """``--task segmentation --clips DIR``: one table, rows = Rainy, each model in each mode, Clean; columns =
    per-frame mIoU / mPA and label instability (:func:`sapnet.downstream.evaluate_video_segmentation`)."""
    from sapnet.data import DatasetError
    from sapnet.downstream import (
        ModelUnavailableError,
        RandomModelWarning,
        create_segmenter,
        evaluate_video_segmentation,
        load_class_map,
    )

    try:
        class_map = load_class_map(args.class_map)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomModelWarning)  # said once below, and in the table
            segmenter = create_segmenter(
                args.segmenter,
                args.weights,
                device=args.device,
                num_classes=class_map.num_classes if args.weights == "random" and not args.pseudo_gt else None,
            )
    except (ModelUnavailableError, ValueError) as e:
        return _fail(str(e))
    _warn_if_random(segmenter, args.weights)
    try:
        result = evaluate_video_segmentation(
            args.clips,
            segmenter,
            args.models,
            args.modes,
            args.out,
            class_map=class_map,
            pseudo_gt=args.pseudo_gt,
            **_clip_options(args),
        )
    except (DatasetError, ValueError) as e:
        return _fail(str(e))
    print(result.markdown)
    _print_files(result.files)
    return 1 if result.skipped or result.problems else 0
