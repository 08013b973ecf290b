"""Evaluate derain methods on benchmark folders: the literature's protocol, tables, per-image scores, grids.

Protocol (as the reference test scripts and the published tables): a network's output is quantised as if
saved to an 8-bit PNG, ``uint8(255 * clamp(x, 0, 1))`` with truncation, then PSNR / SSIM are computed on the
Y channel of MATLAB's ``rgb2ycbcr`` in [0, 255] doubles (11x11 Gaussian SSIM, sigma 1.5), one value per image,
averaged over the images. Precomputed outputs of other methods are read from their PNG / JPEG files as they are.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sapnet.data import IMAGE_EXTENSIONS, ImageConversionWarning, ImageReadError, read_image, write_image
from sapnet.data.datasets import DatasetError, LayoutNotFoundError, find_images, find_pairs
from sapnet.data.image import quantize_8bit
from sapnet.data.registry import check_benchmark
from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.tables import MetricSpec, Record, write_tables
from sapnet.inference import derain
from sapnet.metrics import brisque, psnr, ssim
from sapnet.models import CheckpointError, load_model

__all__ = [
    "METRICS",
    "UNAVAILABLE_METRICS",
    "DatasetSpec",
    "EvaluationResult",
    "Method",
    "check_metrics",
    "evaluate",
    "parse_dataset",
    "resolve_method",
    "resolve_methods",
]

RAINY = "Rainy"


@dataclass(frozen=True)
class _Metric:
    spec: MetricSpec
    paired: bool
    fn: Callable[[torch.Tensor, torch.Tensor | None], float]


def _psnr(x: torch.Tensor, y: torch.Tensor | None) -> float:
    assert y is not None
    return psnr(x[None], y[None]).item()


def _ssim(x: torch.Tensor, y: torch.Tensor | None) -> float:
    assert y is not None
    return ssim(x[None], y[None]).item()


def _brisque(x: torch.Tensor, _: torch.Tensor | None) -> float:
    return brisque(x[None]).item()


METRICS: dict[str, _Metric] = {
    "psnr": _Metric(MetricSpec("psnr", "PSNR", 2, True), True, _psnr),
    "ssim": _Metric(MetricSpec("ssim", "SSIM", 4, True), True, _ssim),
    "brisque": _Metric(MetricSpec("brisque", "BRISQUE", 2, False), False, _brisque),
}
"""Metrics by name: PSNR / SSIM (Y channel, MATLAB protocol) need a clean image; BRISQUE does not."""

UNAVAILABLE_METRICS: dict[str, str] = {
    "niqe": "NIQE is not provided: its published implementations disagree with one another and there are no "
    "reference scores here to calibrate ours against (see sapnet.metrics)",
}
"""Metrics that users may ask for and that are deliberately left out, with the reason."""


def check_metrics(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming each unknown or unavailable metric in ``names``."""
    problems = [UNAVAILABLE_METRICS.get(n, f"unknown metric {n!r}") for n in names if n not in METRICS]
    if problems:
        raise ValueError("; ".join(problems) + f". Available: {', '.join(METRICS)}")


@dataclass
class Method:
    """A derain method: a network (run on each rainy image) or a folder of its precomputed outputs."""

    name: str
    model: torch.nn.Module | None = None
    outputs_dir: Path | None = None

    def output_for(self, dataset: str, name: str, rainy_path: Path) -> Path:
        """The precomputed output for an image: ``DIR/<dataset>/`` (if it exists) or ``DIR/``, matched by the pair
        name or the rainy file's stem, any image extension."""
        assert self.outputs_dir is not None
        folder = self.outputs_dir / dataset if (self.outputs_dir / dataset).is_dir() else self.outputs_dir
        for stem in dict.fromkeys((name, rainy_path.stem)):
            for ext in sorted(IMAGE_EXTENSIONS):
                for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                    if candidate.is_file():
                        return candidate
        raise ImageReadError(f"{folder}: no output named {name!r} or {rainy_path.stem!r} for {rainy_path.name}")


def resolve_method(spec: str) -> Method:
    """``[LABEL=]SPEC`` -> :class:`Method`. SPEC is a folder of precomputed outputs, or anything
    :func:`sapnet.load_model` reads: a registry name (``prenet.rain100h``), a checkpoint file (ours or a public
    SAPNet / PReNet file) or a ``save_pretrained`` folder (one holding ``config.json``).

    Raises:
        CheckpointError / KeyError: with a message naming what is wrong (``KeyError``: the closest valid names).
    """
    label, _, target = spec.rpartition("=")
    path = Path(target).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        return Method(label or path.name, outputs_dir=path)
    model = load_model(target)
    return Method(label or (path.stem if path.exists() else target), model=model)


def resolve_methods(methods: Sequence[str | Method]) -> tuple[list[Method], list[tuple[str, str]]]:
    """:func:`resolve_method` for each spec (:class:`Method` objects pass through): (the methods that load,
    ``(spec, reason)`` for each one that does not)."""
    resolved: list[Method] = []
    failed: list[tuple[str, str]] = []
    for m in methods:
        try:
            resolved.append(m if isinstance(m, Method) else resolve_method(m))
        except (CheckpointError, FileNotFoundError, KeyError, OSError) as e:
            failed.append((str(m), str(e.args[0]) if isinstance(e, KeyError) else str(e)))
    return resolved, failed


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
        metrics: names from :data:`METRICS`.
        out: folder for ``table.md/csv/json``, ``per_image.csv``, ``grid_<dataset>.png`` and, with
            ``save_outputs``, ``outputs/<method>/<dataset>/<name>.png`` (the quantised outputs that were scored).
        device, tile: passed to :func:`sapnet.derain`.
        grid_images: images per dataset in the comparison grid (0: none).
        limit: score only the first ``limit`` images of each dataset (in the datasets' natural order); the
            tables say so. ``None``: all.
        progress: show tqdm progress bars.
        log: where messages about skipped inputs go.
    """
    check_metrics(metrics)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    chosen = [METRICS[m] for m in metrics]
    records: list[Record] = []
    per_image: list[dict[str, object]] = []
    result = EvaluationResult(records, per_image)

    resolved, failed_methods = resolve_methods(methods)
    for name, reason in failed_methods:
        log(f"skipping method {name}: {reason}")

    for ds in (d if isinstance(d, DatasetSpec) else parse_dataset(d) for d in datasets):
        try:
            items, paired = _load_pairs(ds)
        except (DatasetError, OSError) as e:
            log(f"skipping dataset {ds.name}: {e}")
            records.append(Record(RAINY, ds.name, skipped=[("*", str(e))]))
            continue
        if limit is not None:
            items = items[:limit]
        active = [m for m in chosen if paired or not m.paired]
        if not active:
            log(f"skipping dataset {ds.name}: unpaired, and none of {list(metrics)} is a no-reference metric")
            continue
        rows = {name: Record(name, ds.name) for name in [RAINY, *(m.name for m in resolved)]}
        sums: dict[str, dict[str, float]] = {name: {} for name in rows}
        grid_rows: list[list[torch.Tensor]] = []
        for image_name, rainy_path, clean_path in tqdm(items, desc=ds.name, disable=not progress, unit="img"):
            try:
                rainy = read_image(rainy_path)
                clean = _read_ground_truth(clean_path) if clean_path is not None else None
                if clean is not None and clean.shape != rainy.shape:
                    raise ImageReadError(
                        f"{rainy_path} is {tuple(rainy.shape[1:])} but {clean_path} is {tuple(clean.shape[1:])}"
                    )
            except ImageReadError as e:
                log(f"skipping {ds.name}/{image_name}: {e}")
                for rec in rows.values():
                    rec.skipped.append((image_name, str(e)))
                continue
            outputs: dict[str, torch.Tensor] = {RAINY: rainy}
            for method in resolved:
                try:
                    outputs[method.name] = _method_output(
                        method, ds.name, image_name, rainy_path, rainy, device, tile, result
                    )
                    if outputs[method.name].shape != rainy.shape:
                        shape = tuple(outputs[method.name].shape[1:])
                        raise ImageReadError(f"{method.name} output is {shape}, the input {tuple(rainy.shape[1:])}")
                except (ImageReadError, RuntimeError) as e:
                    log(f"skipping {method.name} on {ds.name}/{image_name}: {e}")
                    rows[method.name].skipped.append((image_name, str(e)))
                    outputs.pop(method.name, None)
                    continue
                if save_outputs and out is not None:
                    write_image(outputs[method.name], out / "outputs" / method.name / ds.name / f"{image_name}.png")
            t0 = time.perf_counter()
            for name, image in outputs.items():
                scores = {m.spec.key: m.fn(image, clean) for m in active}
                rows[name].n += 1
                for key, value in scores.items():
                    sums[name][key] = sums[name].get(key, 0.0) + value
                per_image.append({"method": name, "dataset": ds.name, "image": image_name, **scores})
            result.metric_seconds += time.perf_counter() - t0
            if len(grid_rows) < grid_images:
                grid_rows.append(
                    [outputs.get(n, torch.zeros_like(rainy)) for n in rows] + ([clean] if clean is not None else [])
                )
        for name, rec in rows.items():
            rec.values = {k: v / rec.n for k, v in sums[name].items()} if rec.n else {}
            records.append(rec)
        for warning in [] if limit else _benchmark_warnings(ds.name, len(items), rows[RAINY].values.get("psnr")):
            log(f"warning: {warning}")
        if out is not None and grid_rows:
            titles = [*rows, *(["Clean"] if paired else [])]
            grid = comparison_grid(grid_rows, titles)
            out.mkdir(parents=True, exist_ok=True)
            grid.save(out / f"grid_{ds.name}.png")
            result.files[f"grid_{ds.name}"] = out / f"grid_{ds.name}.png"

    for name, reason in failed_methods:
        records.append(Record(name, "*", skipped=[("*", reason)]))
    if out is not None:
        specs = [m.spec for m in chosen]
        note = _PROTOCOL_NOTE + (f" Only the first {limit} images of each dataset were scored." if limit else "")
        result.files.update(write_tables(records, specs, out, note=note))
        result.files["per_image"] = _write_per_image(per_image, [s.key for s in specs], out / "per_image.csv")
    return result


_PROTOCOL_NOTE = (
    "PSNR / SSIM: Y channel of MATLAB rgb2ycbcr on [0, 255] doubles, 11x11 Gaussian SSIM (sigma 1.5), per-image "
    "values averaged; network outputs quantised as uint8(255 * clamp(x, 0, 1)) (truncation) before scoring. "
    "BRISQUE: original LIVE-trained model, lower is better."
)


def _read_ground_truth(path: Path) -> torch.Tensor:
    """Read a clean image, refusing one that is not RGB: scores against replicated gray would be meaningless."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageConversionWarning)
        try:
            return read_image(path)
        except ImageConversionWarning as e:
            raise ImageReadError(f"ground truth must be RGB: {e}") from None


def _benchmark_warnings(name: str, count: int, rainy_psnr: float | None) -> list[str]:
    """Registry checks for a known benchmark name (count, rainy-input PSNR); unknown names give nothing."""
    try:
        return check_benchmark(name, count, rainy_psnr=rainy_psnr, warn=False)
    except KeyError:
        return []


def _method_output(
    method: Method,
    dataset: str,
    image_name: str,
    rainy_path: Path,
    rainy: torch.Tensor,
    device: torch.device | str | None,
    tile: int | None,
    result: EvaluationResult,
) -> torch.Tensor:
    if method.model is None:
        return read_image(method.output_for(dataset, image_name, rainy_path))
    t0 = time.perf_counter()
    out = derain(rainy, method.model, device=device, tile=tile)
    result.model_seconds += time.perf_counter() - t0
    return quantize_8bit(out, "floor")  # truncation: the protocol saves outputs as np.uint8(255 * out) does


def _write_per_image(rows: list[dict[str, object]], keys: list[str], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "dataset", "image", *keys], restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path
