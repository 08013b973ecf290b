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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sapnet.data.builder import pair_seed
from sapnet.data.image import ImageReadError, format_size, quantize_8bit, read_image, write_image
from sapnet.data.synthesis import synthesize_rain
from sapnet.downstream.data import DownstreamItem, DownstreamSet
from sapnet.downstream.models import Detector, Segmenter
from sapnet.downstream.targets import MaskError
from sapnet.downstream.tasks import TASKS, DownstreamTask, create_task
from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.methods import Method, MethodRunner, resolve_methods
from sapnet.evaluation.tables import scores_table, write_tables

__all__ = ["DownstreamResult", "evaluate_downstream"]

RAINY, CLEAN, GROUND_TRUTH = "Rainy", "Clean", "Ground truth"


@dataclass
class DownstreamResult:
    """What :func:`evaluate_downstream` measured.

    Attributes:
        task: the task's name (a key of :data:`sapnet.downstream.tasks.TASKS`).
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

    def markdown(self) -> str:
        """The table (rows = the task's metrics, columns = Rainy, each method, Clean: SAPNet's Table 5), with a
        title above and the note and problems below."""
        text = f"{self.task.capitalize()} on {self.dataset} ({self.images} images), {self.model}.\n\n"
        text += scores_table(self.columns, self.scores, TASKS[self.task].metrics) + "\n\n" + self.note + "\n"
        if self.problems:
            text += "\nProblems:\n" + "".join(f"- {p}\n" for p in self.problems)
        return text

    def write(self, out: Path) -> dict[str, Path]:
        """Write ``table.md`` (:meth:`markdown`), ``table.csv`` (``metric, <column>...``) and ``table.json``
        (:meth:`as_dict`) into ``out``; adds them to :attr:`files`."""
        keys = [m.key for m in TASKS[self.task].metrics]
        rows: list[list[object]] = [
            ["metric", *self.columns],
            *([k, *(self.scores[c].get(k, math.nan) for c in self.columns)] for k in keys),
        ]
        self.files.update(write_tables(out, self.markdown(), rows, self.as_dict()))
        return self.files


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
        A :class:`DownstreamResult` (also written to ``out``). On ``KeyboardInterrupt`` the images scored so far
        are written to ``out`` as a table marked PARTIAL, then the interrupt is raised again.

    Raises:
        ValueError: a detector for a segmentation set or the reverse; a segmenter whose classes differ in
            number from the class map's.
    """
    task: DownstreamTask[Any, Any] = create_task(data, model, pseudo_threshold=pseudo_threshold)
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
    for p in task.problems:
        problems.append(p)
        log(p)
    runner = MethodRunner(device, tile)
    grid_rows: list[list[torch.Tensor]] = []
    seconds = {"derain": 0.0, "model": 0.0}
    start = time.perf_counter()

    def skip(item: DownstreamItem, why: str) -> None:
        problems.append(f"{item.name} left out of every column: {why}")
        log(problems[-1])

    interrupted = False
    try:
        for item in tqdm(data.items, desc=f"{data.task} {data.name}", disable=not progress, unit="img"):
            try:
                clean = read_image(item.clean)
                if item.rainy is not None:
                    rainy_path = item.rainy
                    rainy = read_image(item.rainy)
                else:
                    rainy_path = (out / "rainy" if out is not None else Path("rainy")) / f"{item.name}.png"
                    # Rounded: the rendered input is what write_image stores (as sapnet synth's pairs).
                    rainy = synthesize_rain(clean[None], rain, pair_seed(seed, item.name, 1))[0]
                    rainy = quantize_8bit(rainy, "round")
                    if out is not None:
                        write_image(rainy, rainy_path)
                if rainy.shape != clean.shape:
                    raise ImageReadError(f"rainy {format_size(rainy)} and clean {format_size(clean)} differ")
                target = task.target(item, (clean.shape[1], clean.shape[2]))
            except (ImageReadError, MaskError) as e:
                skip(item, str(e))
                continue
            versions = {RAINY: rainy}
            t0 = time.perf_counter()
            try:
                for method in resolved:
                    versions[method.name] = runner(method, data.name, item.name, rainy_path, rainy)
            except (ImageReadError, RuntimeError) as e:
                skip(item, f"{method.name}: {e}")
                continue
            versions[CLEAN] = clean
            t1 = time.perf_counter()
            predictions = {c: task.model(x) for c, x in versions.items()}
            seconds["derain"] += t1 - t0
            seconds["model"] += time.perf_counter() - t1
            if target is None:  # pseudo ground truth: the model on the clean image
                target = task.pseudo_target(predictions[CLEAN])
            task.update(predictions, target)
            if len(grid_rows) < grid_images:
                grid_rows.append([*(task.draw(versions[c], predictions[c]) for c in columns), task.draw(clean, target)])
    except KeyboardInterrupt:  # keep what was measured: the partial table is written, then re-raised
        interrupted = True

    for p in task.finish():
        problems.append(p)
        log(p)
    seconds["total"] = time.perf_counter() - start
    result = DownstreamResult(
        task=data.task,
        dataset=data.name,
        model=repr(model),
        columns=columns,
        scores=task.compute(columns),
        images=task.images,
        note=(f"PARTIAL results: interrupted after {task.images} images were scored. " if interrupted else "")
        + _note(data, task, rain, seed),
        problems=problems,
        seconds=seconds,
    )
    if out is not None:
        result.write(out)
        if grid_rows:
            titles = [*columns, GROUND_TRUTH if data.ground_truth else "Pseudo ground truth"]
            result.files["grid"] = out / "grid.png"
            comparison_grid(grid_rows, titles).save(result.files["grid"])
        if not data.paired:
            result.files["rainy"] = out / "rainy"
    if interrupted:
        where = f": partial table in {result.files['md']}" if out is not None else ""
        log(f"interrupted after {task.images} images{where}")
        raise KeyboardInterrupt
    return result


def _note(data: DownstreamSet, task: DownstreamTask[Any, Any], rain: str, seed: int) -> str:
    metric, pseudo = task.protocol
    truth = data.ground_truth or f"PSEUDO ground truth: {pseudo}"
    rainy = (
        "the set's own rainy images"
        if data.paired
        else f"rendered by sapnet.data.synthesize_rain (preset {rain!r}, seed {seed}, 8-bit)"
    )
    return f"{metric}. Ground truth: {truth}. Rainy images: {rainy}. Derained images quantised to 8 bits as saved PNGs."
