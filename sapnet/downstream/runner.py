"""Does deraining help a detector or a segmenter? Score one on rainy, derained and clean versions of the same
images (the layout of SAPNet's Table 5: rows = metrics, columns = Rainy, each derain method, Clean).

For each image of a :class:`~sapnet.downstream.data.DownstreamSet`: read the clean image, read or render its rainy
version (rendered ones: :func:`sapnet.data.synthesize_rain` with a fixed preset and a per-image seed from
:func:`sapnet.data.builder.pair_seed`, quantised to 8 bits and written to ``OUT/rainy/`` so other methods can be
run on them), derain it with each method (networks, quantised as saved PNGs, or folders of outputs), run the
downstream model on every version, and score against the ground truth, or, under pseudo ground truth, against
the model's own prediction on the clean image (detections with score >= ``pseudo_threshold``; the full label
map). Every column is scored on the same images: an image that cannot be read, or that a method has no output
for, is left out of all columns and reported.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sapnet.data.builder import pair_seed
from sapnet.data.image import ImageReadError, quantize_8bit, read_image, write_image
from sapnet.data.synthesis import synthesize_rain
from sapnet.downstream.data import DownstreamItem, DownstreamSet
from sapnet.downstream.draw import draw_boxes, draw_labels
from sapnet.downstream.metrics import DetectionMAP, SegmentationScores
from sapnet.downstream.models import Detector, Segmenter
from sapnet.downstream.targets import BoxTargets, MaskError, read_mask
from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.runner import Method, resolve_methods
from sapnet.inference import derain

__all__ = ["METRIC_LABELS", "DownstreamResult", "evaluate_downstream", "markdown_table"]

RAINY, CLEAN, GROUND_TRUTH = "Rainy", "Clean", "Ground truth"

METRIC_LABELS: dict[str, str] = {
    "map": "mAP@[.5:.95]",
    "map50": "mAP@.5",
    "miou": "mIoU",
    "mpa": "mPA",
}
"""Row labels of the table, by metric key (all in [0, 1], higher is better)."""

_TASK_METRICS = {"detection": ("map", "map50"), "segmentation": ("miou", "mpa")}


@dataclass
class DownstreamResult:
    """What :func:`evaluate_downstream` measured.

    Attributes:
        columns: ``Rainy``, each method, ``Clean``.
        scores: column -> metric key -> value in [0, 1] (NaN: undefined, e.g. no ground-truth object).
        images: number of images scored in every column.
        note: the protocol in words (model, ground truth, rain, thresholds).
        problems: what was skipped or dropped, and why.
        files: written files by kind (``md``, ``csv``, ``json``, ``grid``, ``rainy``).
        seconds: wall time per stage (``derain``, ``model``, ``total``).
    """

    task: str
    dataset: str
    model: str
    columns: list[str]
    scores: dict[str, dict[str, float]]
    images: int
    note: str
    problems: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: NaN written as ``null``."""
        return {
            "task": self.task,
            "dataset": self.dataset,
            "model": self.model,
            "images": self.images,
            "note": self.note,
            "columns": self.columns,
            "scores": {c: {k: (None if math.isnan(v) else v) for k, v in s.items()} for c, s in self.scores.items()},
            "problems": self.problems,
        }


def markdown_table(result: DownstreamResult, decimals: int = 4) -> str:
    """Rows = metrics, columns = Rainy, each method, Clean (the layout of SAPNet's Table 5)."""
    lines = [
        "| metric | " + " | ".join(result.columns) + " |",
        "|---|" + "---|" * len(result.columns),
    ]
    for key in _TASK_METRICS[result.task]:
        values = [result.scores[c].get(key, math.nan) for c in result.columns]
        cells = ["-" if math.isnan(v) else f"{v:.{decimals}f}" for v in values]
        lines.append(f"| {METRIC_LABELS[key]} ↑ | " + " | ".join(cells) + " |")
    text = f"{result.task.capitalize()} on {result.dataset} ({result.images} images), {result.model}.\n\n"
    text += "\n".join(lines) + "\n\n" + result.note + "\n"
    if result.problems:
        text += "\nProblems:\n" + "".join(f"- {p}\n" for p in result.problems)
    return text


def _write(result: DownstreamResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.files["md"] = out / "table.md"
    result.files["md"].write_text(markdown_table(result))
    result.files["csv"] = out / "table.csv"
    with result.files["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *result.columns])
        for key in _TASK_METRICS[result.task]:
            writer.writerow([key, *(result.scores[c].get(key, math.nan) for c in result.columns)])
    result.files["json"] = out / "table.json"
    result.files["json"].write_text(json.dumps(result.as_dict(), indent=2) + "\n")


def _method_output(
    method: Method,
    dataset: str,
    item: DownstreamItem,
    rainy: torch.Tensor,
    rainy_path: Path,
    device: torch.device | str | None,
    tile: int | None,
) -> torch.Tensor:
    """A method's derained image (3, H, W) in [0, 1]: its saved output, or its network's, quantised to 8 bits."""
    if method.model is None:
        return read_image(method.output_for(dataset, item.name, rainy_path))
    # Truncated, as the evaluation protocol saves a network's output (np.uint8(255 * out)).
    return quantize_8bit(derain(rainy, method.model, device=device, tile=tile), "floor")


def evaluate_downstream(
    data: DownstreamSet,
    model: Detector | Segmenter,
    methods: Sequence[str | Method] = (),
    out: Path | None = None,
    *,
    rain: str = "heavy",
    seed: int = 0,
    pseudo_threshold: float = 0.3,
    device: torch.device | str | None = None,
    tile: int | None = None,
    grid_images: int = 4,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DownstreamResult:
    """Score ``model`` on the rainy, derained and clean versions of ``data``'s images.

    Args:
        data: images and ground truth (:func:`~sapnet.downstream.data.load_downstream_set`).
        model: a :class:`~sapnet.downstream.models.Detector` (``data.task == "detection"``) or a
            :class:`~sapnet.downstream.models.Segmenter`.
        methods: derain methods (see :func:`sapnet.evaluation.resolve_method`); one that cannot be loaded is
            reported and left out.
        out: folder for ``table.md/csv/json``, ``grid.png`` and the rendered ``rainy/`` images.
        rain, seed: rain preset and seed for sets without rainy images.
        pseudo_threshold: minimum score of a clean-image detection to count as pseudo ground truth.
        device, tile: passed to :func:`sapnet.derain`.
        grid_images: images in the grid (0: no grid).
        progress: tqdm progress bar.
        log: where problems are reported as they happen.

    Returns:
        A :class:`DownstreamResult` (also written to ``out``).

    Raises:
        ValueError: a detector for a segmentation set or the reverse; a segmenter whose classes differ in
            number from the class map's.
    """
    detection = data.task == "detection"
    if not isinstance(model, Detector if detection else Segmenter):
        raise ValueError(f"a {data.task} set needs a {'detector' if detection else 'segmenter'}, got {model!r}")
    problems = list(data.problems)
    for p in problems:
        log(p)
    resolved, failed = resolve_methods(methods)
    for spec, reason in failed:
        problems.append(f"method {spec} left out: {reason}")
        log(problems[-1])
    columns = [RAINY, *(m.name for m in resolved), CLEAN]
    if len(set(columns)) != len(columns):
        raise ValueError(f"column names must be unique, got {columns}; label methods with LABEL=SPEC")

    if detection:
        categories = dict(data.categories or model.categories)  # type: ignore[union-attr]
        foreign = sorted(set(data.categories) - set(model.categories))  # type: ignore[union-attr]
        if foreign:
            problems.append(
                f"annotation categories {foreign} are not among {model.name}'s categories: they can only be missed"
            )
            log(problems[-1])
        meters: dict[str, DetectionMAP | SegmentationScores] = {c: DetectionMAP() for c in columns}
    else:
        classes = data.class_map.classes if data.class_map else model.classes  # type: ignore[union-attr]
        if len(classes) != len(model.classes):  # type: ignore[union-attr]
            raise ValueError(
                f"{model.name} predicts {len(model.classes)} classes but the class map "  # type: ignore[union-attr]
                f"{data.class_map.name if data.class_map else ''} has {len(classes)}"
            )
        meters = {c: SegmentationScores(len(classes)) for c in columns}
    unknown_values: dict[int, int] = {}
    grid_rows: list[list[torch.Tensor]] = []
    seconds = {"derain": 0.0, "model": 0.0}
    start = time.perf_counter()
    scored = 0
    objects = 0

    def skip(item: DownstreamItem, why: str) -> None:
        problems.append(f"{item.name} left out of every column: {why}")
        log(problems[-1])

    for item in tqdm(data.items, desc=f"{data.task} {data.name}", disable=not progress, unit="img"):
        try:
            clean = read_image(item.clean)
            if item.rainy is not None:
                rainy_path = item.rainy
                rainy = read_image(item.rainy)
            else:
                rainy_path = (out / "rainy" if out is not None else Path("rainy")) / f"{item.name}.png"
                # Rounded: the rendered input is what write_image stores (as sapnet synth's pairs).
                rainy = quantize_8bit(synthesize_rain(clean[None], rain, pair_seed(seed, item.name, 1))[0], "round")
                if out is not None:
                    write_image(rainy, rainy_path)
            if rainy.shape != clean.shape:
                raise ImageReadError(f"rainy {tuple(rainy.shape[1:])} and clean {tuple(clean.shape[1:])} differ")
            target: torch.Tensor | BoxTargets | None = None
            if item.mask is not None and data.class_map is not None:
                target, unknown = read_mask(item.mask, data.class_map)
                for value, count in unknown.items():
                    unknown_values[value] = unknown_values.get(value, 0) + count
                if target.shape != clean.shape[1:]:
                    raise MaskError(f"mask {tuple(target.shape)} and image {tuple(clean.shape[1:])} differ in size")
            elif item.boxes is not None:
                target = item.boxes
        except (ImageReadError, MaskError) as e:
            skip(item, str(e))
            continue
        versions = {RAINY: rainy}
        t0 = time.perf_counter()
        try:
            for method in resolved:
                versions[method.name] = _method_output(
                    method, data.name, item, rainy, rainy_path, device=device, tile=tile
                )
                if versions[method.name].shape != clean.shape:
                    raise ImageReadError(f"{method.name}'s output is {tuple(versions[method.name].shape[1:])}")
        except (ImageReadError, RuntimeError) as e:
            skip(item, f"{method.name}: {e}")
            continue
        versions[CLEAN] = clean
        t1 = time.perf_counter()
        predictions = {c: model(x) for c, x in versions.items()}
        seconds["derain"] += t1 - t0
        seconds["model"] += time.perf_counter() - t1
        if target is None:  # pseudo ground truth: the model on the clean image
            clean_prediction = predictions[CLEAN]
            target = clean_prediction.above(pseudo_threshold).as_targets() if detection else clean_prediction
        for c in columns:
            meters[c].update(predictions[c], target)  # type: ignore[arg-type]
        scored += 1
        objects += len(target) if isinstance(target, BoxTargets) else 0
        if len(grid_rows) < grid_images:
            if detection:
                row = [draw_boxes(versions[c], predictions[c], categories) for c in columns]
                row.append(draw_boxes(clean, target, categories))  # type: ignore[arg-type]
            else:
                row = [draw_labels(versions[c], predictions[c], len(classes)) for c in columns]
                row.append(draw_labels(clean, target, len(classes)))  # type: ignore[arg-type]
            grid_rows.append(row)

    if detection and scored and not objects:
        why = (
            f"{model.name} found nothing with score >= {pseudo_threshold} on the clean images"
            if data.ground_truth is None
            else "the annotations hold none"
        )
        problems.append(f"no ground-truth object in the {scored} images ({why}): mAP is undefined")
        log(problems[-1])
    if unknown_values:
        values = ", ".join(f"{v} ({n} px)" for v, n in sorted(unknown_values.items()))
        problems.append(f"mask values outside the class map, ignored: {values}")
        log(problems[-1])
    seconds["total"] = time.perf_counter() - start
    result = DownstreamResult(
        task=data.task,
        dataset=data.name,
        model=repr(model),
        columns=columns,
        scores={c: meters[c].compute() if scored else {} for c in columns},
        images=scored,
        note=_note(data, rain, seed, pseudo_threshold, detection),
        problems=problems,
        seconds=seconds,
    )
    if out is not None:
        _write(result, out)
        if grid_rows:
            titles = [*columns, GROUND_TRUTH if data.ground_truth else "Pseudo ground truth"]
            result.files["grid"] = out / "grid.png"
            comparison_grid(grid_rows, titles).save(result.files["grid"])
        if not data.paired:
            result.files["rainy"] = out / "rainy"
    return result


def _note(data: DownstreamSet, rain: str, seed: int, pseudo_threshold: float, detection: bool) -> str:
    if detection:
        metric = "COCO box mAP (pycocotools; at most 100 detections per image, all object sizes)"
        pseudo = (
            f"the detector's own detections on the clean images with score >= {pseudo_threshold} "
            "(so the Clean column is 1 by construction)"
        )
    else:
        metric = "mIoU over classes present in truth or prediction, mPA over classes present in truth"
        pseudo = "the segmenter's own label maps of the clean images (so the Clean column is 1 by construction)"
    truth = data.ground_truth or f"PSEUDO ground truth: {pseudo}"
    rainy = (
        "the set's own rainy images"
        if data.paired
        else f"rendered by sapnet.data.synthesize_rain (preset {rain!r}, seed {seed}, 8-bit)"
    )
    return f"{metric}. Ground truth: {truth}. Rainy images: {rainy}. Derained images quantised to 8 bits as saved PNGs."
