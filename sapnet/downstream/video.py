"""Derain-then-segment on video (the WeatherProof pipeline): does deraining, in each temporal mode, help a segmenter
on rainy clips, and does it keep the segmentation steady from frame to frame?

A clip is a folder with ``rain/`` and optionally ``clean/`` and ``masks/`` (one index PNG per frame, in natural
order, read with a :class:`~sapnet.downstream.targets.ClassMap`), as :func:`sapnet.evaluation.find_clips` finds
them (``sapnet synth --video`` writes ``rain/`` and ``clean/``). For each clip the segmenter labels every frame of
every version (rows): ``Rainy``, each derain network in each temporal mode (:class:`sapnet.video.VideoDerainer`,
outputs quantised as the evaluation protocol saves them), and ``Clean`` where the clip has ``clean/``. Scored:

* mIoU and mPA of each frame (:func:`~sapnet.downstream.metrics.segmentation_scores`) against the clip's masks,
  or, without ``masks/`` (or with ``pseudo_gt``), against the segmenter's own labels of the clean frames (pseudo
  ground truth: the ``Clean`` row is then 1 by construction); a clip with neither masks nor clean frames gets
  no mIoU / mPA;
* the label instability of each pair of consecutive frames (:func:`sapnet.metrics.label_instability`): the
  fraction of visible pixels whose label differs from the flow-warped previous frame's, the flow measured on the
  clean frames (the true motion, the same for every row) where the clip has them, else on the rainy ones.

A row's values are means over its clips of the per-clip means over frames (frame pairs for the instability).
Frames are streamed; only the pseudo ground truth of the clip being scored is held (2 bytes per pixel and frame).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm

from sapnet.data.datasets import DatasetError
from sapnet.data.image import ImageReadError
from sapnet.data.listing import list_images
from sapnet.downstream.draw import draw_labels
from sapnet.downstream.metrics import segmentation_scores
from sapnet.downstream.models import Segmenter
from sapnet.downstream.targets import ClassMap, MaskError, read_mask
from sapnet.downstream.tasks import SegmentationTask
from sapnet.evaluation.methods import Method
from sapnet.evaluation.tables import write_tables
from sapnet.evaluation.video import (
    DEFAULT_VIDEO_MODES,
    SECONDS_PER_FRAME,
    Clip,
    ClipVersion,
    PerFrameWriter,
    VersionStrip,
    VideoEvaluationResult,
    VideoRow,
    check_video_modes,
    clip_frame_count,
    derained_frames,
    find_clips,
    score_version,
    skip_clip,
    video_table,
    video_versions,
)
from sapnet.metrics import LabelInstability, MetricSpec
from sapnet.video import DEFAULT_WINDOW, MODES, read_frames

__all__ = [
    "INSTABILITY",
    "VIDEO_SEGMENTATION_METRICS",
    "VideoSegmentationResult",
    "evaluate_video_segmentation",
]

INSTABILITY = MetricSpec("instability", "label instability", 4, False)
"""The fraction of visible pixels whose label changes from a frame to the next (flow-warped), lower is better."""

VIDEO_SEGMENTATION_METRICS: tuple[MetricSpec, ...] = (*SegmentationTask.metrics, INSTABILITY)
"""The columns of the video segmentation table: per-frame mIoU and mPA, label instability (and seconds per
frame of the derainers, :data:`sapnet.evaluation.SECONDS_PER_FRAME`)."""


@dataclass
class VideoSegmentationResult(VideoEvaluationResult):
    """What :func:`evaluate_video_segmentation` measured: as :class:`~sapnet.evaluation.VideoEvaluationResult`
    (the rows: ``Rainy``, each method / mode, ``Clean``; a row's ``values`` are means over clips, ``frames`` the
    frames segmented), with the problems seen; the files written are ``md``, ``csv``, ``json``, ``per_frame``,
    ``per_clip`` and ``strip``."""

    problems: list[str] = field(default_factory=list)


@dataclass
class _Truth:
    """What the frames of a clip are scored against: ``kind`` ``"masks"`` (``masks``, read with ``class_map``),
    ``"pseudo"`` (``pseudo``: the segmenter's labels of the clean frames, filled by the clean version) or
    ``"none"``."""

    kind: str
    masks: list[Path] = field(default_factory=list)
    class_map: ClassMap | None = None
    pseudo: list[torch.Tensor] = field(default_factory=list)
    unknown_values: dict[int, int] = field(default_factory=dict)
    dtype: torch.dtype = torch.int16  # of the pseudo ground truth: enough for fewer than 2^15 classes

    def target(self, index: int, labels: torch.Tensor, clean: bool) -> torch.Tensor | None:
        """The ground truth of frame ``index``, whose labels (for the version scored) are ``labels``."""
        if self.kind == "masks":
            assert self.class_map is not None
            mask, unknown = read_mask(self.masks[index], self.class_map)
            for value, n in unknown.items():
                self.unknown_values[value] = self.unknown_values.get(value, 0) + n
            if mask.shape != labels.shape:
                raise MaskError(
                    f"{self.masks[index]} is {mask.shape[-1]}x{mask.shape[-2]}, the frames "
                    f"{labels.shape[-1]}x{labels.shape[-2]}"
                )
            return mask
        if self.kind == "pseudo":
            if clean:  # held compactly while the clip is scored
                self.pseudo.append(labels.to(self.dtype))
            return self.pseudo[index].long()
        return None


def _clip_truth(
    clip: Clip, pseudo_gt: bool, class_map: ClassMap | None, num_classes: int, unknown_values: dict[int, int]
) -> tuple[_Truth, int]:
    """The clip's ground truth and its frame count; ``DatasetError`` where its folders disagree in length."""
    count = clip_frame_count(clip)
    if clip.masks is not None and not pseudo_gt:
        masks = list_images(clip.masks)
        if len(masks) != count:
            raise DatasetError(f"{clip.rain} has {count} frames, {clip.masks} {len(masks)} masks")
        return _Truth("masks", masks, class_map, unknown_values=unknown_values), count
    dtype = torch.int16 if num_classes <= 2**15 else torch.int32
    return _Truth("pseudo" if clip.clean is not None else "none", unknown_values=unknown_values, dtype=dtype), count


def _score_version(
    version: ClipVersion, clip: Clip, count: int, segmenter: Segmenter, truth: _Truth, step: Callable[[], object]
) -> tuple[list[dict[str, float]], torch.Tensor]:
    """Segment the frames of one version of one clip: per frame ``{"miou", "mpa", "instability"}`` (the scores
    that apply) and the first frame with its labels drawn. Raises what reading or scoring raises."""
    num_classes = len(segmenter.classes)
    flow_frames = islice(read_frames(clip.clean if clip.clean is not None else clip.rain), count)
    instability = LabelInstability()
    rows: list[dict[str, float]] = []
    first: torch.Tensor | None = None
    for index, frame in enumerate(_frames(version, clip, count)):
        labels = segmenter(frame).cpu()
        row: dict[str, float] = {}
        target = truth.target(index, labels, version.clean)
        if target is not None:
            scores = segmentation_scores(labels, target, num_classes)
            row.update(miou=scores["miou"], mpa=scores["mpa"])
        reference = next(flow_frames, None)
        if reference is None:
            raise DatasetError(f"{clip.clean or clip.rain} ends after {index} frames")
        change = instability.update(labels, reference)
        if change is not None:
            row["instability"] = change
        rows.append(row)
        if first is None:
            first = draw_labels(frame, labels, num_classes)
        step()
    if first is None:
        raise DatasetError(f"{clip.rain}: no frames")
    return rows, first


def _frames(version: ClipVersion, clip: Clip, limit: int | None) -> Iterator[torch.Tensor]:
    """The frames of ``version`` of ``clip`` that the segmenter sees, in order."""
    if version.clean:
        assert clip.clean is not None
        return islice(read_frames(clip.clean), limit)
    rainy = islice(read_frames(clip.rain), limit)
    if version.derainer is None:
        return rainy
    return (out for out, _ in derained_frames(version.derainer, rainy, version.add_seconds))


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def evaluate_video_segmentation(
    clips: str | os.PathLike[str] | Sequence[Clip],
    segmenter: Segmenter,
    models: Sequence[str | Method] = (),
    modes: Sequence[str] = DEFAULT_VIDEO_MODES,
    out: Path | None = None,
    *,
    class_map: ClassMap | None = None,
    pseudo_gt: bool = False,
    window: int | None = None,
    frames: int | None = None,
    device: torch.device | str | None = None,
    tile: int | None = None,
    strip_clips: int = 4,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> VideoSegmentationResult:
    """Segment the rainy clips, their derained versions (each network in each temporal mode) and the clean clips,
    and score each row by per-frame mIoU / mPA and label instability; see the module docstring for the protocol.

    Args:
        clips: a folder of clips or one clip folder (:func:`sapnet.evaluation.find_clips`), or
            :class:`~sapnet.evaluation.Clip` objects.
        segmenter: a :class:`~sapnet.downstream.models.Segmenter` (image (3, H, W) in [0, 1] -> int64 (H, W)).
        models: derain methods, as :func:`sapnet.evaluation.evaluate_video` takes them (networks; ``none`` for
            the ``lowrank`` mode alone); one that does not load is reported and listed as skipped.
        modes: temporal modes of :data:`sapnet.video.MODES`, each run with each network.
        out: folder for ``table.md/csv/json``, ``per_frame.csv`` (``method, mode, clip, frame`` (0-based),
            ``miou, mpa, instability``; the instability of the pair ending at that frame), ``per_clip.csv`` (the
            per-clip means) and ``strip.png`` (the first frame of each version of the first ``strip_clips``
            clips with its labels drawn).
        class_map: how the values of the clips' ``masks/`` map to the segmenter's classes (needed when a clip has
            masks and ``pseudo_gt`` is false; its class count must be the segmenter's).
        pseudo_gt: score against the segmenter's labels of the clean frames even where a clip has masks.
        window, frames, device, tile: as :func:`sapnet.evaluation.evaluate_video`.
        strip_clips: clips in the strip (0: no strip).
        progress: a tqdm bar per clip. log: where messages about skipped clips and methods go.

    Raises:
        ValueError: an unknown mode, a bad ``frames`` or window, a no-network method without a mode that works
            without one, clips with masks but no ``class_map``, or a class map whose class count is not the
            segmenter's (all checked before a frame is read). DatasetNotFoundError / DatasetError: no clips.
    """
    modes = list(dict.fromkeys(modes))
    check_video_modes(modes)
    if frames is not None and (isinstance(frames, bool) or frames < 1):
        raise ValueError(f"frames must be >= 1 or None, got {frames}")
    clip_list = list(clips) if not isinstance(clips, (str, os.PathLike)) else find_clips(clips)
    num_classes = len(segmenter.classes)
    with_masks = [] if pseudo_gt else [c for c in clip_list if c.masks is not None]
    if with_masks:
        if class_map is None:
            raise ValueError(f"clip {with_masks[0].name} has masks/: give the class map of its mask values")
        if class_map.num_classes != num_classes:
            raise ValueError(
                f"{segmenter.name} predicts {num_classes} classes but the class map {class_map.name} has "
                f"{class_map.num_classes}"
            )
    methods, versions, failed = video_versions(models, modes, clip_list, log, window=window, tile=tile, device=device)

    problems: list[str] = []
    unknown_values: dict[int, int] = {}
    keys = [spec.key for spec in VIDEO_SEGMENTATION_METRICS]
    per_frame = None if out is None else PerFrameWriter(out / "per_frame.csv", keys)
    per_clip_rows: list[dict[str, object]] = []
    strip = VersionStrip(versions, strip_clips)
    truth_kinds: dict[str, int] = {"masks": 0, "pseudo": 0, "none": 0}
    try:
        for clip in clip_list:
            try:
                truth, count = _clip_truth(clip, pseudo_gt, class_map, num_classes, unknown_values)
            except (DatasetError, ImageReadError, OSError) as e:
                skip_clip(versions, clip, str(e), log)
                continue
            count = count if frames is None else min(count, frames)
            active = [v for v in versions if v.applies_to(clip)]
            active.sort(key=lambda v: not v.clean)  # the clean frames first: their labels are the pseudo ground truth
            truth_kinds[truth.kind] += 1
            if truth.kind == "none":
                problems.append(f"{clip.name}: no masks/ and no clean/: no mIoU / mPA, label instability only")
                log(problems[-1])
            with tqdm(total=count * len(active), desc=clip.name, unit="frame", disable=not progress) as bar:
                for v in active:
                    if truth.kind == "pseudo" and not v.clean and not truth.pseudo:
                        v.row.skipped.append((clip.name, "no pseudo ground truth: the clean frames were not segmented"))
                        continue
                    # skipped on a ValueError too: an unusable mask (MaskError) or frame, labels outside the classes
                    score = partial(_score_version, v, clip, count, segmenter, truth, bar.update)
                    scored = score_version(v, clip, score, log)
                    if scored is None:
                        if v.clean:
                            truth.pseudo.clear()
                        continue
                    rows, first = scored
                    strip.add(v, first)
                    means = {key: _mean([r[key] for r in rows if key in r]) for key in keys}
                    kept = {k: m for k, m in means.items() if m is not None}
                    v.add(kept)
                    if per_frame is not None:
                        per_frame.write_clip(v, clip, rows)
                    ident = {"method": v.row.method, "mode": v.row.mode, "clip": clip.name}
                    per_clip_rows.append({**ident, "frames": len(rows), **kept})
            strip.end_clip()
    finally:
        if per_frame is not None:
            per_frame.close()

    for v in versions:
        v.row.values = v.means()
    if unknown_values:
        text = ", ".join(f"{value} ({n} px)" for value, n in sorted(unknown_values.items()))
        problems.append(f"mask values outside the class map, ignored: {text}")
        log(problems[-1])
    rows_all = [v.row for v in versions] + failed
    table, csv_rows, data = video_table(rows_all, [*VIDEO_SEGMENTATION_METRICS, SECONDS_PER_FRAME])
    markdown = _markdown(segmenter, table, rows_all, clip_list, truth_kinds, modes, methods, window, frames, class_map)
    if problems:
        markdown += "\nProblems:\n" + "".join(f"- {p}\n" for p in problems)
    result = VideoSegmentationResult(rows_all, clip_list, markdown, problems=problems)
    if out is not None:
        result.files.update(write_tables(out, markdown, csv_rows, data))
        assert per_frame is not None
        result.files["per_frame"] = per_frame.path
        result.files["per_clip"] = out / "per_clip.csv"
        with result.files["per_clip"].open("w", newline="") as f:
            writer = csv.DictWriter(f, ["method", "mode", "clip", "frames", *keys])
            writer.writeheader()
            writer.writerows(per_clip_rows)
        if strip.save(out / "strip.png"):
            result.files["strip"] = out / "strip.png"
    return result


def _markdown(
    segmenter: Segmenter,
    table: str,
    rows: Sequence[VideoRow],
    clips: Sequence[Clip],
    truth_kinds: dict[str, int],
    modes: Sequence[str],
    methods: Sequence[Method],
    window: int | None,
    frames: int | None,
    class_map: ClassMap | None,
) -> str:
    """The table with its title and its notes on the protocol."""
    scored = max((r.clips for r in rows), default=0)
    truth = []
    if truth_kinds["masks"]:
        where = f" ({class_map.name} classes)" if class_map is not None else ""
        truth.append(f"{truth_kinds['masks']} with masks/{where}")
    if truth_kinds["pseudo"]:
        truth.append(
            f"{truth_kinds['pseudo']} against PSEUDO ground truth: the segmenter's own labels of the clean frames "
            "(so the Clean row is 1 by construction)"
        )
    if truth_kinds["none"]:
        truth.append(f"{truth_kinds['none']} without ground truth (instability only)")
    windowed = [m for m in modes if MODES[m].windowed and methods]
    lines = [
        f"Video segmentation on {len(clips)} clips, {segmenter!r}.",
        "",
        "mIoU (classes present in truth or prediction) and mPA (classes present in truth) per frame; label "
        "instability: the fraction of the pixels visible in both frames (forward-backward check) whose label "
        "differs from the previous frame's warped onto them (nearest pixel), flow on the clean frames where a clip "
        "has them, else on the rainy ones. Derained frames quantised as saved 8-bit PNGs. s/frame: the temporal "
        "derainer's time per frame.",
        "",
    ]
    if windowed:
        lines += [f"Window of {' / '.join(windowed)}: {window or DEFAULT_WINDOW} frames.", ""]
    limit = f" (the first {frames} of each)" if frames is not None else ""
    lines += [
        table,
        "",
        f"Means over clips ({scored} of {len(clips)} scored) of the means over each clip's frames{limit} (frame "
        f"pairs for the instability). Ground truth: {'; '.join(truth) or 'none'}.",
    ]
    skipped = [(r, clip, why) for r in rows for clip, why in r.skipped]
    if skipped:
        lines += ["", "Skipped:"]
        lines += [f"- {r.label} / {clip}: {why}" for r, clip, why in skipped]
    return "\n".join(lines) + "\n"
