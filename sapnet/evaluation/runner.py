"""Evaluate derain methods on benchmark folders: the literature's protocol, tables, per-image scores, grids.

Protocol (as the reference test scripts and the published tables): a network's output is quantised as if
saved to an 8-bit PNG, ``uint8(255 * clamp(x, 0, 1))`` with truncation, then PSNR / SSIM are computed on the
Y channel of MATLAB's ``rgb2ycbcr`` in [0, 255] doubles (11x11 Gaussian SSIM, sigma 1.5), one value per image,
averaged over the images. Precomputed outputs of other methods are read from their PNG / JPEG files as they are.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sapnet.data import ImageConversionWarning, ImageReadError, read_image, write_image
from sapnet.data.datasets import DatasetError, LayoutNotFoundError, find_images, find_pairs
from sapnet.data.image import format_size
from sapnet.data.listing import plural, summarise
from sapnet.data.registry import check_benchmark
from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.methods import Method, MethodRunner, resolve_methods
from sapnet.evaluation.tables import PerImageWriter, Record, write_records
from sapnet.metrics import METRICS, MetricSpec, check_metrics

__all__ = ["RAINY", "DatasetSpec", "EvaluationResult", "evaluate", "parse_dataset"]

RAINY = "Rainy"
"""The row of the rainy inputs themselves."""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset to evaluate on: its display name and root folder."""

    name: str
    root: Path


def parse_dataset(spec: str) -> DatasetSpec:
    """``NAME=DIR`` or ``DIR`` (named after the folder) -> :class:`DatasetSpec`."""
    name, _, root = spec.rpartition("=")
    path = Path(root).expanduser()
    return DatasetSpec(name or path.resolve().name, path)


@dataclass
class EvaluationResult:
    """Everything an evaluation produced."""

    records: list[Record]
    per_image: list[dict[str, object]]
    files: dict[str, Path] = field(default_factory=dict)
    model_seconds: float = 0.0
    metric_seconds: float = 0.0


def _load_pairs(spec: DatasetSpec) -> tuple[list[tuple[str, Path, Path | None]], bool]:
    """(name, rainy, clean-or-None) for each image, and whether the set is paired."""
    try:
        return [(p.name, p.rainy, p.clean) for p in find_pairs(spec.root)], True
    except LayoutNotFoundError:  # no paired layout: a folder of real rainy photos
        return [(p.stem, p, None) for p in find_images(spec.root)], False


def evaluate(
    methods: Sequence[str | Method],
    datasets: Sequence[str | DatasetSpec],
    metrics: Sequence[str] = ("psnr", "ssim"),
    out: Path | None = None,
    *,
    save_outputs: bool = False,
    device: torch.device | str | None = None,
    tile: int | None = None,
    grid_images: int = 4,
    limit: int | None = None,
    images: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> EvaluationResult:
    """Score the rainy inputs (row ``Rainy``) and each method on each dataset.

    Args:
        methods: method specs (see :func:`resolve_method`) or :class:`Method` objects. One that cannot be loaded
            is reported and listed as skipped; the others still run.
        datasets: ``NAME=DIR`` specs or :class:`DatasetSpec`. Paired folders (any layout of
            :func:`sapnet.data.find_pairs`) get the paired metrics; folders of images alone get the no-reference
            metrics only.
        metrics: names from :data:`sapnet.metrics.METRICS`.
        out: folder for ``table.md/csv/json``, ``per_image.csv``, ``grid_<dataset>.png`` and, with
            ``save_outputs``, ``outputs/<method>/<dataset>/<name>.png`` (the quantised outputs that were scored).
        device, tile: passed to :func:`sapnet.derain`.
        grid_images: images per dataset in the comparison grid (0: none).
        limit: score only the first ``limit`` images of each dataset (in the datasets' natural order); the
            tables say so. ``None``: all.
        images: score only the images of these file names (or pair names), e.g. a split from
            :func:`sapnet.data.read_name_list`; listed names a dataset lacks are reported. Before ``limit``.
        progress: show tqdm progress bars.
        log: where messages about skipped inputs go.

    On ``KeyboardInterrupt`` (Ctrl-C) the images scored so far are kept: ``per_image.csv`` is written row by row
    as they come, and the tables of those images are written marked PARTIAL; then the interrupt is raised again.
    """
    check_metrics(metrics)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    chosen = [METRICS[m] for m in metrics]
    subset = f" Only listed images were scored ({len(images)} listed)." if images is not None else ""
    subset += f" Only the first {limit} images of each dataset were scored." if limit else ""
    records: list[Record] = []
    per_image: list[dict[str, object]] = []
    result = EvaluationResult(records, per_image)
    runner = MethodRunner(device, tile)

    resolved, failed_methods = resolve_methods(methods)
    for name, reason in failed_methods:
        log(f"skipping method {name}: {reason}")
    specs = [m.spec for m in chosen]
    current: tuple[dict[str, Record], dict[str, dict[str, float]]] | None = None  # the dataset being scored

    def close_dataset(rows: dict[str, Record], sums: dict[str, dict[str, float]]) -> None:
        for name, rec in rows.items():
            rec.values = {k: v / rec.n for k, v in sums[name].items()} if rec.n else {}
            records.append(rec)

    writer = PerImageWriter(out / "per_image.csv", [s.key for s in specs]) if out is not None else None
    try:
        for ds in (d if isinstance(d, DatasetSpec) else parse_dataset(d) for d in datasets):
            try:
                items, paired = _load_pairs(ds)
            except (DatasetError, OSError) as e:
                log(f"skipping dataset {ds.name}: {e}")
                records.append(Record(RAINY, ds.name, skipped=[("*", str(e))]))
                continue
            if images is not None:
                items = _select(items, images, ds.name, log)
                if not items:
                    log(f"skipping dataset {ds.name}: none of the {len(images)} listed images is in it")
                    continue
            if limit is not None:
                items = items[:limit]
            active = [m for m in chosen if paired or not m.paired]
            if not active:
                log(f"skipping dataset {ds.name}: unpaired, and none of {list(metrics)} is a no-reference metric")
                continue
            rows = {name: Record(name, ds.name) for name in [RAINY, *(m.name for m in resolved)]}
            sums: dict[str, dict[str, float]] = {name: {} for name in rows}
            current = rows, sums
            grid_rows: list[list[torch.Tensor]] = []
            for image_name, rainy_path, clean_path in tqdm(items, desc=ds.name, disable=not progress, unit="img"):
                try:
                    rainy = read_image(rainy_path)
                    clean = _read_ground_truth(clean_path) if clean_path is not None else None
                    if clean is not None and clean.shape != rainy.shape:
                        raise ImageReadError(
                            f"{rainy_path} is {format_size(rainy)} but {clean_path} is {format_size(clean)}"
                        )
                except ImageReadError as e:
                    log(f"skipping {ds.name}/{image_name}: {e}")
                    for rec in rows.values():
                        rec.skipped.append((image_name, str(e)))
                    continue
                outputs: dict[str, torch.Tensor] = {RAINY: rainy}
                for method in resolved:
                    try:
                        outputs[method.name] = runner(method, ds.name, image_name, rainy_path, rainy)
                    except (ImageReadError, RuntimeError) as e:
                        log(f"skipping {method.name} on {ds.name}/{image_name}: {e}")
                        rows[method.name].skipped.append((image_name, str(e)))
                        outputs.pop(method.name, None)
                        continue
                    if save_outputs and out is not None:
                        path = out / "outputs" / method.name / ds.name / f"{image_name}.png"
                        write_image(outputs[method.name], path)
                t0 = time.perf_counter()
                scores = {name: {m.spec.key: m.fn(image, clean) for m in active} for name, image in outputs.items()}
                result.metric_seconds += time.perf_counter() - t0
                for name, values in scores.items():  # the image counts in every row at once, or in none
                    rows[name].n += 1
                    for key, value in values.items():
                        sums[name][key] = sums[name].get(key, 0.0) + value
                    per_image.append({"method": name, "dataset": ds.name, "image": image_name, **values})
                    if writer is not None:
                        writer.write(per_image[-1])
                if len(grid_rows) < grid_images:
                    grid_rows.append(
                        [outputs.get(n, torch.zeros_like(rainy)) for n in rows] + ([clean] if clean is not None else [])
                    )
            current = None
            close_dataset(rows, sums)
            whole = limit is None and images is None  # a subset is not expected to match the benchmark's figures
            for warning in _benchmark_warnings(ds.name, len(items), rows[RAINY].values.get("psnr")) if whole else []:
                log(f"warning: {warning}")
            if out is not None and grid_rows:
                titles = [*rows, *(["Clean"] if paired else [])]
                grid = comparison_grid(grid_rows, titles)
                out.mkdir(parents=True, exist_ok=True)
                grid.save(out / f"grid_{ds.name}.png")
                result.files[f"grid_{ds.name}"] = out / f"grid_{ds.name}.png"
    except KeyboardInterrupt:
        if current is not None:
            close_dataset(*current)
        scored = sum(r.n for r in records if r.method == RAINY)
        note = f"PARTIAL results: interrupted after {scored} images were scored (the means are over those)."
        _finish(result, failed_methods, specs, out, subset, note)
        where = f": partial table in {result.files['md']}" if out is not None else ""
        log(f"interrupted after {scored} images{where}")
        raise
    finally:
        if writer is not None:
            writer.close()

    _finish(result, failed_methods, specs, out, subset)
    result.model_seconds = runner.total_seconds
    return result


def _select(
    items: list[tuple[str, Path, Path | None]], names: Sequence[str], dataset: str, log: Callable[[str], None]
) -> list[tuple[str, Path, Path | None]]:
    """The items whose rainy file name or pair name is in ``names`` (their order kept); reports the missing."""
    wanted = set(names)
    kept = [item for item in items if item[1].name in wanted or item[0] in wanted]
    found = {item[1].name for item in kept} | {item[0] for item in kept}
    missing = [n for n in names if n not in found]
    if missing and kept:
        log(f"{dataset}: {plural(len(missing), 'listed image')} not found: {summarise(missing)}")
    return kept


def _finish(
    result: EvaluationResult,
    failed_methods: list[tuple[str, str]],
    specs: list[MetricSpec],
    out: Path | None,
    subset: str,
    partial: str = "",
) -> None:
    """List the methods that did not load and write the tables (``partial``: what an interrupted run says)."""
    for name, reason in failed_methods:
        result.records.append(Record(name, "*", skipped=[("*", reason)]))
    if out is not None:
        note = _PROTOCOL_NOTE + subset
        result.files.update(write_records(result.records, specs, out, note=f"{partial} {note}" if partial else note))
        result.files["per_image"] = out / "per_image.csv"


_PROTOCOL_NOTE = (
    "PSNR / SSIM: Y channel of MATLAB rgb2ycbcr on [0, 255] doubles, 11x11 Gaussian SSIM (sigma 1.5), per-image "
    "values averaged; network outputs quantised as uint8(255 * clamp(x, 0, 1)) (truncation) before scoring. "
    "BRISQUE (original LIVE-trained model), NIQE (MATLAB release's pristine model, Y channel, 96x96 blocks), "
    "PIQE: lower is better."
)


def _read_ground_truth(path: Path) -> torch.Tensor:
    """Read a clean image, refusing one that is not RGB: scores against replicated gray would be meaningless."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageConversionWarning)
        try:
            return read_image(path)
        except ImageConversionWarning as e:
            raise ImageReadError(f"ground truth must be RGB, but {e.what} {e.found}") from None


def _benchmark_warnings(name: str, count: int, rainy_psnr: float | None) -> list[str]:
    """Registry checks for a known benchmark name (count, rainy-input PSNR); unknown names give nothing."""
    try:
        return check_benchmark(name, count, rainy_psnr=rainy_psnr, warn=False)
    except KeyError:
        return []
