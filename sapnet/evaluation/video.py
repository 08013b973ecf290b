"""Evaluate video deraining on clips: each temporal mode of each network against the rainy and clean clips.

A clip is a folder with ``rain/`` (its rainy frames) and, optionally, ``clean/`` (the ground truth, frame for
frame), as :func:`sapnet.video.build_video_set` writes them. Every version of a clip is streamed: the rainy frames
are read once per version and given to the temporal derainer (:class:`sapnet.video.VideoDerainer`) one at a
time, and each output frame is scored as it comes out; only the derainer's window, the rainy frames it has not
yet answered and the previous frame of the temporal metrics are held.

Protocol: a network's output frame is quantised as if saved to an 8-bit PNG (``uint8(255 * clamp(x, 0, 1))``,
truncation, as the image evaluation does), then scored. PSNR / SSIM are the image protocol's (Y channel of
MATLAB's ``rgb2ycbcr``) per frame; NIQE per frame; the temporal metrics per pair of consecutive frames: warping
error and tOF against the clean clip (its motion) where the clip has ``clean/``, else flicker (flow from the rainy
frames). The table's values are means over all frames (or frame pairs) of all clips.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sapnet.data.datasets import DatasetError, DatasetNotFoundError
from sapnet.data.image import ImageReadError, quantize_8bit
from sapnet.data.listing import natural_sort_key
from sapnet.evaluation.grid import comparison_grid
from sapnet.evaluation.methods import Method, resolve_methods
from sapnet.evaluation.runner import RAINY
from sapnet.evaluation.tables import ARROWS, PerImageWriter, format_value, markdown_table, write_tables
from sapnet.metrics import METRICS, TOF, Flicker, MetricSpec, WarpingError
from sapnet.video import DEFAULT_WINDOW, MODES, FrameReadWarning, VideoDerainer, probe, read_frames

__all__ = [
    "CLEAN",
    "DEFAULT_VIDEO_MODES",
    "NO_NETWORK",
    "SECONDS_PER_FRAME",
    "VIDEO_METRICS",
    "Clip",
    "ClipVersion",
    "PerFrameWriter",
    "VersionStrip",
    "VideoEvaluationResult",
    "VideoRow",
    "check_video_metrics",
    "check_video_modes",
    "clip_frame_count",
    "derained_frames",
    "evaluate_video",
    "find_clips",
    "score_version",
    "skip_clip",
    "video_derainers",
    "video_methods",
    "video_table",
    "video_versions",
]

CLEAN = "Clean"
"""The row of the clean clips themselves (where clips have ``clean/``)."""

NO_NETWORK = "none"
"""The method spec for no network: the ``lowrank`` mode alone."""

DEFAULT_VIDEO_MODES = ("frame", "fuse")
"""The temporal modes scored when none are named."""

VIDEO_METRICS: dict[str, MetricSpec] = {
    "psnr": METRICS["psnr"].spec,
    "ssim": METRICS["ssim"].spec,
    "warp": MetricSpec("warp", "warp err", 5, False),
    "tof": MetricSpec("tof", "tOF", 3, False),
    "flicker": MetricSpec("flicker", "flicker", 4, False),
    "niqe": METRICS["niqe"].spec,
}
"""The metrics of the video table by name: PSNR / SSIM and warping error / tOF need ``clean/``; flicker is scored
on clips without it; NIQE on every frame."""

SECONDS_PER_FRAME = MetricSpec("seconds_per_frame", "s/frame", 3, False)
"""The derainer's time per frame (network, optical flow, fusion; not reading or scoring), in every table."""

_PAIRED = ("psnr", "ssim")
_WITH_CLEAN = ("warp", "tof")


def check_video_metrics(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming each name in ``names`` that is not in :data:`VIDEO_METRICS`."""
    problems = [f"unknown video metric {n!r}" for n in names if n not in VIDEO_METRICS]
    if problems:
        raise ValueError("; ".join(problems) + f". Available: {', '.join(VIDEO_METRICS)}")


def check_video_modes(modes: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``modes`` names at least one mode and only modes of :data:`sapnet.video.MODES`."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown modes {unknown}: use some of {', '.join(MODES)}")


@dataclass(frozen=True)
class Clip:
    """A clip to score: its name, its folder of rainy frames, its folder of clean frames and its folder of
    segmentation masks (index PNGs, one per frame in natural order, for
    :func:`sapnet.downstream.evaluate_video_segmentation`), each ``None`` where the clip has none."""

    name: str
    rain: Path
    clean: Path | None = None
    masks: Path | None = None


def find_clips(root: str | os.PathLike[str]) -> list[Clip]:
    """The clips under ``root``: ``root`` itself when it has a ``rain/`` folder (one clip, named after ``root``),
    else each sub-folder with ``rain/`` (natural order of names, hidden ones skipped); ``clean/`` and ``masks/``
    where present.

    Raises:
        DatasetNotFoundError: no such folder. DatasetError: no clip found.
    """
    path = Path(root)
    if not path.is_dir():
        raise DatasetNotFoundError(f"{path}: no such folder of clips")

    def clip(folder: Path) -> Clip:
        clean, masks = folder / "clean", folder / "masks"
        return Clip(
            folder.resolve().name,
            folder / "rain",
            clean if clean.is_dir() else None,
            masks if masks.is_dir() else None,
        )

    if (path / "rain").is_dir():
        return [clip(path)]
    folders = sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "rain").is_dir()),
        key=lambda p: natural_sort_key(p.name),
    )
    if not folders:
        raise DatasetError(
            f"{path}: no clips: expected <clip>/rain/ folders of frames (each with an optional <clip>/clean/), "
            "or a clip folder holding rain/ itself"
        )
    return [clip(f) for f in folders]


@dataclass
class VideoRow:
    """One row of the table: a method (``Rainy``, a network's name or ``Clean``) in a temporal mode (``""`` for
    the rainy and clean clips), its means (``values``: metric key -> mean over frames or frame pairs,
    :data:`SECONDS_PER_FRAME` for a derainer), the clips and frames scored and the (clip, reason) of those not."""

    method: str
    mode: str = ""
    clips: int = 0
    frames: int = 0
    values: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method} ({self.mode})" if self.mode else self.method

    def as_dict(self) -> dict[str, Any]:
        """``{"method", "mode", "clips", "frames", <metric>: mean, ..., "skipped": count}``."""
        return {
            "method": self.method,
            "mode": self.mode,
            "clips": self.clips,
            "frames": self.frames,
            **self.values,
            "skipped": len(self.skipped),
        }


@dataclass
class VideoEvaluationResult:
    """Everything a video evaluation produced: the rows, the clips, the Markdown table and the files written
    (``md``, ``csv``, ``json``, ``per_frame``, ``strip``)."""

    rows: list[VideoRow]
    clips: list[Clip]
    markdown: str = ""
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        """Whether some clip or method was not scored."""
        return any(row.skipped for row in self.rows)


@dataclass(eq=False)
class ClipVersion:
    """A version of each clip that becomes a row of a video table: the rainy frames (no ``derainer``, not
    ``clean``), the clean frames themselves (``clean``) or a derainer's output; with the running sums and counts
    of its values (metric key -> sum, number of values summed) and the derainer's seconds."""

    row: VideoRow
    derainer: VideoDerainer | None = None
    clean: bool = False
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add_seconds(self, seconds: float) -> None:
        """Count ``seconds`` more of the derainer's time (the ``timing`` of :func:`derained_frames`)."""
        self.seconds += seconds

    def add(self, values: Mapping[str, float]) -> None:
        """Add one value per metric key (a frame's values, or a clip's means) to the running sums."""
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        """The row's values: the mean of each key added, and :data:`SECONDS_PER_FRAME` (the derainer's seconds
        over ``row.frames``) for a derainer that ran."""
        values = {k: self.sums[k] / n for k, n in self.counts.items() if n}
        if self.derainer is not None and self.row.frames:
            values[SECONDS_PER_FRAME.key] = self.seconds / self.row.frames
        return values

    def applies_to(self, clip: Clip) -> bool:
        """Whether ``clip`` has this version: every clip has its rainy and derained ones, the clean one needs
        ``clean/``."""
        return not self.clean or clip.clean is not None


def _label_spec(spec: str) -> tuple[str, str]:
    label, _, target = spec.rpartition("=")
    return label, target


def video_methods(models: Sequence[str | Method], log: Callable[[str], None]) -> tuple[list[Method], list[VideoRow]]:
    """The methods of ``models`` (``[LABEL=]SPEC`` or :class:`Method`; ``[LABEL=]none``: no network) and a
    skipped row for each that does not load or is a folder of precomputed outputs (clips need networks)."""
    methods: list[Method] = []
    failed: list[VideoRow] = []
    for spec in models:
        if isinstance(spec, str) and _label_spec(spec)[1].strip().lower() == NO_NETWORK:
            methods.append(Method(_label_spec(spec)[0] or NO_NETWORK))
            continue
        loaded, problems = resolve_methods([spec])
        for name, reason in problems:
            log(f"skipping method {name}: {reason}")
            failed.append(VideoRow(name, skipped=[("*", reason)]))
        for method in loaded:
            if method.outputs_dir is not None:
                reason = "a folder of precomputed outputs: video evaluation runs networks on the clips"
                log(f"skipping method {method.name}: {reason}")
                failed.append(VideoRow(method.name, skipped=[("*", reason)]))
            else:
                methods.append(method)
    return methods, failed


def video_derainers(
    methods: Sequence[Method],
    modes: Sequence[str],
    log: Callable[[str], None],
    *,
    window: int | None = None,
    tile: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[tuple[VideoRow, VideoDerainer]], list[VideoRow]]:
    """A derainer for each method in each of ``modes`` that it can run in (the modes that need none for a method
    without a network), with its empty row; and a skipped row for each (method, mode) the mode refuses the network
    of (:meth:`sapnet.video.TemporalDerainer.model_problem`). ``window`` applies to the modes with a window.

    Raises:
        ValueError: an unknown mode, a window a mode refuses, or a method without a network and no mode that
            works without one.
    """
    check_video_modes(modes)
    derainers: list[tuple[VideoRow, VideoDerainer]] = []
    failed: list[VideoRow] = []
    for method in methods:
        usable = [m for m in modes if method.model is not None or not MODES[m].needs_model]
        if not usable:
            raise ValueError(
                f"method {method.name!r} has no network: it runs only in mode lowrank, not in {', '.join(modes)}"
            )
        for mode in usable:
            problem = None if method.model is None else MODES[mode].model_problem(method.model)
            if problem is not None:
                log(f"skipping {method.name} in mode {mode}: {problem}")
                failed.append(VideoRow(method.name, mode, skipped=[("*", problem)]))
                continue
            size = window if MODES[mode].windowed else None
            derainer = VideoDerainer(method.model, mode, window=size, tile=tile, device=device)
            derainers.append((VideoRow(method.name, mode), derainer))
    return derainers, failed


def video_versions(
    models: Sequence[str | Method],
    modes: Sequence[str],
    clips: Sequence[Clip],
    log: Callable[[str], None],
    *,
    window: int | None = None,
    tile: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[Method], list[ClipVersion], list[VideoRow]]:
    """The methods of ``models`` (:func:`video_methods`), the versions to score (``Rainy``, each method in each
    of ``modes`` it runs in (:func:`video_derainers`), ``Clean`` where some clip of ``clips`` has ``clean/``), and
    the skipped rows of the methods that do not load and of the (method, mode) pairs a mode refuses.

    Raises:
        ValueError: as :func:`video_derainers`.
    """
    methods, failed = video_methods(models, log)
    derainers, refused = video_derainers(methods, modes, log, window=window, tile=tile, device=device)
    versions = [ClipVersion(VideoRow(RAINY)), *(ClipVersion(row, derainer) for row, derainer in derainers)]
    if any(c.clean is not None for c in clips):
        versions.append(ClipVersion(VideoRow(CLEAN), clean=True))
    return methods, versions, failed + refused


def clip_frame_count(clip: Clip) -> int:
    """The frames of ``clip``: :func:`sapnet.video.probe` of ``rain/`` (unreadable frames count; reading them is
    an error later).

    Raises:
        DatasetError: ``clean/`` holds another number of frames; what probing raises (``DatasetError``,
            ``ImageReadError``, ``OSError``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameReadWarning)  # an error when the frames are read
        count = probe(clip.rain).frames or 0
        clean_count = None if clip.clean is None else probe(clip.clean).frames
    if clean_count is not None and clean_count != count:
        raise DatasetError(f"{clip.rain} has {count} frames, {clip.clean} {clean_count}")
    return count


def skip_clip(versions: Iterable[ClipVersion], clip: Clip, reason: str, log: Callable[[str], None]) -> None:
    """Log that ``clip`` is skipped and why, and list it as skipped in the row of every version."""
    log(f"skipping clip {clip.name}: {reason}")
    for v in versions:
        v.row.skipped.append((clip.name, reason))


_SCORING_ERRORS = (DatasetError, ImageReadError, FrameReadWarning, OSError, RuntimeError, ValueError)


def score_version(
    version: ClipVersion,
    clip: Clip,
    score: Callable[[], tuple[list[dict[str, float]], torch.Tensor]],
    log: Callable[[str], None],
) -> tuple[list[dict[str, float]], torch.Tensor] | None:
    """Run ``score`` (one version of one clip: its per-frame values and the frame that shows it in the strip)
    with an unreadable frame an error (the frames of the versions must stay aligned), and count the clip and its
    frames in the version's row. ``None`` where ``score`` raised a reading or scoring error (``DatasetError``,
    ``ImageReadError``, ``FrameReadWarning``, ``OSError``, ``RuntimeError``, ``ValueError``): it is logged and
    the clip listed as skipped in the row."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FrameReadWarning)  # frames must stay aligned
            values, first = score()
    except _SCORING_ERRORS as e:
        log(f"skipping {version.row.label} on clip {clip.name}: {e}")
        version.row.skipped.append((clip.name, str(e)))
        return None
    version.row.clips += 1
    version.row.frames += len(values)
    return values, first


class PerFrameWriter(PerImageWriter):
    """``per_frame.csv`` written as the clips are scored: columns ``method, mode, clip, frame`` (0-based) and
    ``metrics``, one row per frame of each version of each clip (empty where a frame has no value), flushed after
    each row. Created with its header at construction; :meth:`close` it (or use it as a context manager)."""

    def __init__(self, path: Path, metrics: Sequence[str]) -> None:
        super().__init__(path, metrics, keys=("method", "mode", "clip", "frame"))

    def write_clip(self, version: ClipVersion, clip: Clip, values: Sequence[Mapping[str, float]]) -> None:
        """Append a row per frame of ``version`` of ``clip``: ``values[i]`` holds the values of frame ``i``."""
        for index, frame_values in enumerate(values):
            row = {"method": version.row.method, "mode": version.row.mode, "clip": clip.name, "frame": index}
            self.write({**row, **frame_values})


class VersionStrip:
    """The rows of ``strip.png`` (:func:`sapnet.evaluation.comparison_grid`): for each of the first ``clips``
    clips on which some version was scored, a frame per version of ``versions`` (float (3, H, W) in [0, 1]; black
    for a version not scored on that clip), titled with the versions' labels."""

    def __init__(self, versions: Sequence[ClipVersion], clips: int) -> None:
        self.versions = list(versions)
        self.clips = clips
        self.rows: list[list[torch.Tensor]] = []
        self._frames: dict[int, torch.Tensor] = {}  # the current clip's, by index in versions

    def add(self, version: ClipVersion, frame: torch.Tensor) -> None:
        """Give the frame that shows ``version`` (one of ``versions``) on the current clip."""
        self._frames[self.versions.index(version)] = frame

    def end_clip(self) -> bool:
        """End the current clip, its row kept while the strip has fewer than ``clips``; returns whether a frame
        of it was given."""
        frames, self._frames = self._frames, {}
        if not frames:
            return False
        if len(self.rows) < self.clips:
            blank = torch.zeros_like(next(iter(frames.values())))
            self.rows.append([frames.get(i, blank) for i in range(len(self.versions))])
        return True

    def save(self, path: Path) -> bool:
        """Write the strip to ``path`` (PNG); returns whether there was one (no rows: nothing is written)."""
        if not self.rows:
            return False
        comparison_grid(self.rows, [v.row.label for v in self.versions]).save(path)
        return True


def derained_frames(
    derainer: VideoDerainer, rainy: Iterable[torch.Tensor], timing: Callable[[float], None] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(output, rainy input) for each frame of the clip ``rainy`` (read lazily), in order: the derainer's output
    quantised as the evaluation protocol saves it (``uint8(255 * x)``, truncation); ``timing`` is given the
    seconds of each call of the derainer (not reading, not what the caller does with the frames)."""
    derainer.reset()
    pending: deque[torch.Tensor] = deque()  # rainy frames given, not yet answered (at most the window's delay)
    ends: Iterator[torch.Tensor | None] = chain(rainy, [None])  # None: the clip's end (frames read lazily)
    for frame in ends:
        start = time.perf_counter()
        if frame is None:
            ready = derainer.flush()
        else:
            pending.append(frame)
            ready = derainer.step(frame)
        if timing is not None:
            timing(time.perf_counter() - start)
        for out in ready:
            # Truncated: the evaluation protocol saves a network's output as np.uint8(255 * out) does.
            yield quantize_8bit(out, "floor"), pending.popleft()


def _score_clip(
    version: ClipVersion,
    clip: Clip,
    metrics: Sequence[str],
    limit: int | None,
    niqe_problems: dict[str, str],
    step: Callable[[], object],
) -> tuple[list[dict[str, float]], torch.Tensor]:
    """Score one version of one clip: per-frame values (the temporal ones on the pair ending at that frame) and
    the first output frame. Raises what reading the frames raises (an unreadable frame included)."""
    rainy = islice(read_frames(clip.rain), limit)
    clean = None if clip.clean is None else islice(read_frames(clip.clean), limit)
    frames: Iterator[tuple[torch.Tensor, torch.Tensor]]
    if version.derainer is not None:
        frames = derained_frames(version.derainer, rainy, version.add_seconds)
    elif version.clean:
        assert clip.clean is not None
        frames = zip(islice(read_frames(clip.clean), limit), rainy, strict=True)
    else:
        frames = ((frame, frame) for frame in rainy)
    temporal: dict[str, WarpingError | TOF | Flicker]
    if clean is not None:
        temporal = {k: (WarpingError() if k == "warp" else TOF()) for k in _WITH_CLEAN if k in metrics}
    else:
        temporal = {"flicker": Flicker()} if "flicker" in metrics else {}
    per_frame: list[dict[str, float]] = []
    first: torch.Tensor | None = None
    for index, (output, rain) in enumerate(frames):
        truth = None if clean is None else next(clean, None)
        if clean is not None and truth is None:
            raise DatasetError(f"{clip.clean} ends after {index} frames, {clip.rain} goes on")
        if truth is not None and truth.shape != output.shape:
            raise DatasetError(
                f"{clip.clean} frame {index} is {truth.shape[-1]}x{truth.shape[-2]}, the rainy frames "
                f"{output.shape[-1]}x{output.shape[-2]}"
            )
        values: dict[str, float] = {}
        if truth is not None:
            values.update({k: METRICS[k].fn(output, truth) for k in _PAIRED if k in metrics})
        if "niqe" in metrics and clip.name not in niqe_problems:
            try:
                values["niqe"] = METRICS["niqe"].fn(output, None)
            except ValueError as e:  # frames too small for NIQE's blocks: left out for this clip
                niqe_problems[clip.name] = str(e)
        for key, metric in temporal.items():
            value = metric.update(output, truth if key in _WITH_CLEAN else rain)
            if value is not None:
                values[key] = value
        per_frame.append(values)
        if first is None:
            first = output
        step()
    if clean is not None and next(clean, None) is not None:
        raise DatasetError(f"{clip.clean} has more frames than {clip.rain}")
    if first is None:
        raise DatasetError(f"{clip.rain}: no frames")
    return per_frame, first


def _json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def video_table(
    rows: Sequence[VideoRow], specs: Sequence[MetricSpec]
) -> tuple[str, list[list[object]], list[dict[str, Any]]]:
    """The Markdown table of ``rows`` (rows = method / mode, columns = the metrics of ``specs`` some row has), its
    CSV rows (``method, mode, clips, frames, <metric>..., skipped``) and its JSON records (non-finite values as
    ``null`` / ``"inf"``)."""
    columns = [s for s in specs if any(s.key in r.values for r in rows)]
    header = ["method", "mode", *[f"{s.label} {ARROWS[s.higher_is_better]}" for s in columns]]
    cells = [[r.method, r.mode or "-", *[format_value(r.values.get(s.key), s.decimals) for s in columns]] for r in rows]
    keys = ["method", "mode", "clips", "frames", *[s.key for s in columns], "skipped"]
    dicts = [r.as_dict() for r in rows]
    csv_rows: list[list[object]] = [list(keys), *([d.get(k, "") for k in keys] for d in dicts)]
    data = [{k: _json_value(d.get(k)) for k in keys} for d in dicts]
    return markdown_table(header, cells), csv_rows, data


_PROTOCOL_NOTE = (
    "PSNR / SSIM: Y channel of MATLAB rgb2ycbcr on [0, 255] doubles, 11x11 Gaussian SSIM (sigma 1.5), per frame; "
    "network outputs quantised as uint8(255 * clamp(x, 0, 1)) (truncation) before scoring. Warping error (Lai et "
    "al. 2018, squared RGB difference in [0, 1] units) and tOF (Chu et al. 2020, pixels) against the clean clip's "
    "motion on clips with clean/; flicker (mean absolute difference to the warped previous frame, flow from the "
    "rainy frames) on clips without. NIQE per frame. s/frame: the temporal derainer's time per frame (network, "
    "optical flow, fusion), not reading or scoring."
)


def evaluate_video(
    clips: str | os.PathLike[str] | Sequence[Clip],
    models: Sequence[str | Method] = (),
    modes: Sequence[str] = DEFAULT_VIDEO_MODES,
    metrics: Sequence[str] = tuple(VIDEO_METRICS),
    out: Path | None = None,
    *,
    window: int | None = None,
    frames: int | None = None,
    device: torch.device | str | None = None,
    tile: int | None = None,
    strip_clips: int = 4,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> VideoEvaluationResult:
    """Score the rainy clips (row ``Rainy``), each network in each temporal mode, and the clean clips (row
    ``Clean``, where clips have ``clean/``) on a set of clips; see the module docstring for the protocol.

    Args:
        clips: a folder of clips or one clip folder (:func:`find_clips`), or :class:`Clip` objects.
        models: method specs (``[LABEL=]SPEC``, :func:`sapnet.evaluation.resolve_method`: registry names,
            checkpoints; not folders of precomputed outputs) or :class:`Method` objects with a network;
            ``[LABEL=]none`` (or a :class:`Method` without a network) is no network, scored in the modes that need
            none (``lowrank``). A method that does not load is reported and listed as skipped.
        modes: temporal modes of :data:`sapnet.video.MODES`, each run with each network.
        metrics: names from :data:`VIDEO_METRICS` (seconds per frame are always given).
        out: folder for ``table.md/csv/json``, ``per_frame.csv`` (``method, mode, clip, frame`` (0-based),
            metrics; the temporal ones on the pair ending at that frame) and ``strip.png`` (the first frame of
            each version of the first ``strip_clips`` clips, side by side).
        window: frames in the window of the ``fuse`` and ``lowrank`` modes (odd; default
            :data:`sapnet.video.DEFAULT_WINDOW`); ``frame`` and ``recurrent`` have none.
        frames: score only the first ``frames`` frames of each clip (``None``: all).
        device, tile: where the networks run and their tiling, as :class:`sapnet.video.VideoDerainer`.
        strip_clips: clips in the strip (0: no strip).
        progress: a tqdm bar per clip. log: where messages about skipped clips and methods go.

    Raises:
        ValueError: an unknown metric or mode, a bad ``frames`` or a window a mode refuses, a no-network method
            with no mode that works without one (all checked before a frame is read). DatasetNotFoundError /
            DatasetError: no clips at ``clips``.
    """
    check_video_metrics(metrics)
    metrics = list(dict.fromkeys(metrics))
    modes = list(dict.fromkeys(modes))
    check_video_modes(modes)
    if frames is not None and (isinstance(frames, bool) or frames < 1):
        raise ValueError(f"frames must be >= 1 or None, got {frames}")
    if not isinstance(clips, (str, os.PathLike)):
        clip_list = list(clips)
    else:
        clip_list = find_clips(clips)
    methods, versions, failed = video_versions(models, modes, clip_list, log, window=window, tile=tile, device=device)

    per_frame = None if out is None else PerFrameWriter(out / "per_frame.csv", metrics)
    niqe_problems: dict[str, str] = {}
    strip = VersionStrip(versions, strip_clips)
    scored_clips = 0
    try:
        for clip in clip_list:
            try:
                count = clip_frame_count(clip)
            except (DatasetError, ImageReadError, OSError) as e:
                skip_clip(versions, clip, str(e), log)
                continue
            count = count if frames is None else min(count, frames)
            active = [v for v in versions if v.applies_to(clip)]
            with tqdm(total=count * len(active), desc=clip.name, unit="frame", disable=not progress) as bar:
                for v in active:
                    score = partial(_score_clip, v, clip, metrics, frames, niqe_problems, bar.update)
                    scored = score_version(v, clip, score, log)
                    if scored is None:
                        continue
                    values, first = scored
                    for frame_values in values:
                        v.add(frame_values)
                    if per_frame is not None:
                        per_frame.write_clip(v, clip, values)
                    strip.add(v, first)
            if clip.name in niqe_problems:
                log(f"{clip.name}: NIQE left out: {niqe_problems[clip.name]}")
            if strip.end_clip():
                scored_clips += 1
    finally:
        if per_frame is not None:
            per_frame.close()

    for v in versions:
        v.row.values = v.means()
    rows = [v.row for v in versions] + failed
    table, csv_rows, data = video_table(rows, [*(VIDEO_METRICS[m] for m in metrics), SECONDS_PER_FRAME])
    with_clean = sum(c.clean is not None for c in clip_list)
    lines = [_PROTOCOL_NOTE, ""]
    windowed = [m for m in modes if MODES[m].windowed and methods]
    if windowed:
        lines += [f"Window of {' / '.join(windowed)}: {window or DEFAULT_WINDOW} frames.", ""]
    lines += [table, ""]
    limit = f" (the first {frames} of each clip)" if frames is not None else ""
    lines.append(
        f"Means over the frames{limit} of {scored_clips} of {len(clip_list)} clips ({with_clean} with clean/); "
        "temporal metrics over consecutive frame pairs."
    )
    skipped = [(r, clip, why) for r in rows for clip, why in r.skipped]
    if skipped:
        lines += ["", "Skipped:"]
        lines += [f"- {r.label} / {clip}: {why}" for r, clip, why in skipped]
    result = VideoEvaluationResult(rows, clip_list, "\n".join(lines) + "\n")
    if out is not None:
        result.files.update(write_tables(out, result.markdown, csv_rows, data))
        assert per_frame is not None
        result.files["per_frame"] = per_frame.path
        if strip.save(out / "strip.png"):
            result.files["strip"] = out / "strip.png"
    return result
