"""Downstream tasks: what the benchmark runner needs to know about a task, one class per task.

A :class:`DownstreamTask` is built for one test set and one model (:func:`create_task`). It reads each image's
ground truth, makes pseudo ground truth from the model's prediction on the clean image when there is none,
accumulates the scores of every column (Rainy, each method, Clean), draws predictions for the grid and says in
words how it scores. :func:`sapnet.downstream.evaluate_downstream` runs any task the same way; a new task (e.g.
video) is a new subclass, listed in :data:`TASKS` and built by :func:`create_task`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch

from sapnet.downstream.data import DownstreamItem, DownstreamSet
from sapnet.downstream.draw import draw_boxes, draw_labels
from sapnet.downstream.metrics import DetectionMAP, SegmentationScores
from sapnet.downstream.models import Detector, Segmenter
from sapnet.downstream.targets import BoxTargets, Detections, MaskError, read_mask
from sapnet.metrics import MetricSpec

__all__ = ["TASKS", "DetectionTask", "DownstreamTask", "Meter", "SegmentationTask", "create_task"]

P = TypeVar("P")  # a model's prediction for one image
T = TypeVar("T")  # the ground truth of one image
P_contra = TypeVar("P_contra", contravariant=True)
T_contra = TypeVar("T_contra", contravariant=True)


class Meter(Protocol[P_contra, T_contra]):
    """Scores accumulated over images: ``update(prediction, target)`` per image, then ``compute()``."""

    def update(self, prediction: P_contra, target: T_contra) -> None: ...

    def compute(self) -> dict[str, float]: ...


class DownstreamTask(ABC, Generic[P, T]):
    """One task on one test set with one model; scores accumulate per column (one :class:`Meter` each).

    Attributes:
        name: the task's name (``data.task``).
        metrics: the table's rows (all in [0, 1], higher is better).
        model_kind: what the task needs, in words (``"detector"``).
        model: the downstream model, ``model(image float (3, H, W) in [0, 1]) -> prediction``.
        problems: what the task found worth reporting when set up (e.g. unknown categories); see also
            :meth:`finish`.
        images: images scored so far.
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    model_kind: ClassVar[str]

    def __init__(self, data: DownstreamSet, model: Callable[[torch.Tensor], P]) -> None:
        self.data = data
        self.model = model
        self.problems: list[str] = []
        self.images = 0
        self.meters: dict[str, Meter[P, T]] = {}

    @abstractmethod
    def new_meter(self) -> Meter[P, T]:
        """An empty meter for one column."""

    @abstractmethod
    def target(self, item: DownstreamItem, size: tuple[int, int]) -> T | None:
        """The ground truth of ``item`` (an image of ``size`` = (H, W)), ``None`` when it has none (pseudo ground
        truth). Raises :class:`~sapnet.downstream.targets.MaskError` for ground truth that cannot be used."""

    @abstractmethod
    def pseudo_target(self, clean_prediction: P) -> T:
        """Pseudo ground truth from the model's prediction on the clean image."""

    def update(self, predictions: Mapping[str, P], target: T) -> None:
        """Score one image: ``predictions`` by column, against ``target``."""
        for column, prediction in predictions.items():
            self.meters.setdefault(column, self.new_meter()).update(prediction, target)
        self.images += 1

    def compute(self, columns: Sequence[str]) -> dict[str, dict[str, float]]:
        """Column -> metric key -> score over the images so far (NaN: undefined; ``{}``: no image scored)."""
        return {c: self.meters[c].compute() if c in self.meters else {} for c in columns}

    @abstractmethod
    def draw(self, image: torch.Tensor, labels: P | T) -> torch.Tensor:
        """``labels`` (a prediction or the ground truth) drawn on ``image``: float (3, H', W') in [0, 1]."""

    @abstractmethod
    def finish(self) -> list[str]:
        """Problems seen over all images (said once, after the last one)."""

    @property
    @abstractmethod
    def protocol(self) -> tuple[str, str]:
        """(how the task scores, what its pseudo ground truth is), in words for the table's note."""


class DetectionTask(DownstreamTask[Detections, BoxTargets]):
    """COCO box mAP of a :class:`~sapnet.downstream.models.Detector`; pseudo ground truth: its clean-image
    detections with score >= ``pseudo_threshold``."""

    name = "detection"
    metrics = (MetricSpec("map", "mAP@[.5:.95]", 4, True), MetricSpec("map50", "mAP@.5", 4, True))
    model_kind = "detector"

    def __init__(self, data: DownstreamSet, model: Detector, pseudo_threshold: float = 0.3) -> None:
        super().__init__(data, model)
        self.detector = model
        self.pseudo_threshold = pseudo_threshold
        self.categories = dict(data.categories or model.categories)
        foreign = sorted(set(data.categories) - set(model.categories))
        if foreign:
            self.problems.append(
                f"annotation categories {foreign} are not among {model.name}'s categories: they can only be missed"
            )
        self.objects = 0

    def new_meter(self) -> DetectionMAP:
        return DetectionMAP()

    def target(self, item: DownstreamItem, size: tuple[int, int]) -> BoxTargets | None:
        return item.boxes

    def pseudo_target(self, clean_prediction: Detections) -> BoxTargets:
        return clean_prediction.above(self.pseudo_threshold).as_targets()

    def update(self, predictions: Mapping[str, Detections], target: BoxTargets) -> None:
        super().update(predictions, target)
        self.objects += len(target)

    def draw(self, image: torch.Tensor, labels: Detections | BoxTargets) -> torch.Tensor:
        return draw_boxes(image, labels, self.categories)

    def finish(self) -> list[str]:
        if not self.images or self.objects:
            return []
        why = (
            f"{self.detector.name} found nothing with score >= {self.pseudo_threshold} on the clean images"
            if self.data.ground_truth is None
            else "the annotations hold none"
        )
        return [f"no ground-truth object in the {self.images} images ({why}): mAP is undefined"]

    @property
    def protocol(self) -> tuple[str, str]:
        return (
            "COCO box mAP (pycocotools; at most 100 detections per image, all object sizes)",
            f"the detector's own detections on the clean images with score >= {self.pseudo_threshold} "
            "(so the Clean column is 1 by construction)",
        )


class SegmentationTask(DownstreamTask[torch.Tensor, torch.Tensor]):
    """mIoU / mPA of a :class:`~sapnet.downstream.models.Segmenter` against index masks read with the set's
    class map; pseudo ground truth: its clean-image label maps. Label maps are int64 (H, W) class ids."""

    name = "segmentation"
    metrics = (MetricSpec("miou", "mIoU", 4, True), MetricSpec("mpa", "mPA", 4, True))
    model_kind = "segmenter"

    def __init__(self, data: DownstreamSet, model: Segmenter) -> None:
        super().__init__(data, model)
        self.classes = data.class_map.classes if data.class_map else model.classes
        if len(self.classes) != len(model.classes):
            raise ValueError(
                f"{model.name} predicts {len(model.classes)} classes but the class map "
                f"{data.class_map.name if data.class_map else ''} has {len(self.classes)}"
            )
        self.unknown_values: dict[int, int] = {}

    def new_meter(self) -> SegmentationScores:
        return SegmentationScores(len(self.classes))

    def target(self, item: DownstreamItem, size: tuple[int, int]) -> torch.Tensor | None:
        if item.mask is None or self.data.class_map is None:
            return None
        mask, unknown = read_mask(item.mask, self.data.class_map)
        for value, count in unknown.items():
            self.unknown_values[value] = self.unknown_values.get(value, 0) + count
        if mask.shape != size:
            raise MaskError(
                f"mask {mask.shape[-1]}x{mask.shape[-2]} and image {size[1]}x{size[0]} (WxH) differ in size"
            )
        return mask

    def pseudo_target(self, clean_prediction: torch.Tensor) -> torch.Tensor:
        return clean_prediction

    def draw(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return draw_labels(image, labels, len(self.classes))

    def finish(self) -> list[str]:
        if not self.unknown_values:
            return []
        values = ", ".join(f"{v} ({n} px)" for v, n in sorted(self.unknown_values.items()))
        return [f"mask values outside the class map, ignored: {values}"]

    @property
    def protocol(self) -> tuple[str, str]:
        return (
            "mIoU over classes present in truth or prediction, mPA over classes present in truth",
            "the segmenter's own label maps of the clean images (so the Clean column is 1 by construction)",
        )


TASKS: dict[str, type[DownstreamTask[Any, Any]]] = {t.name: t for t in (DetectionTask, SegmentationTask)}
"""Task classes by name (:attr:`DownstreamSet.task <sapnet.downstream.data.DownstreamSet.task>`)."""


def create_task(
    data: DownstreamSet, model: Detector | Segmenter, *, pseudo_threshold: float = 0.3
) -> DetectionTask | SegmentationTask:
    """The task of ``data`` (``data.task``) for ``model``; ``pseudo_threshold``: see :class:`DetectionTask`.

    Raises:
        ValueError: a model of the wrong kind (a segmenter for a detection set), or a segmenter whose classes
            differ in number from the class map's.
    """
    if data.task == "detection" and isinstance(model, Detector):
        return DetectionTask(data, model, pseudo_threshold)
    if data.task == "segmentation" and isinstance(model, Segmenter):
        return SegmentationTask(data, model)
    if data.task not in TASKS:
        raise ValueError(f"unknown downstream task {data.task!r}; known: {', '.join(TASKS)}")
    raise ValueError(f"a {data.task} set needs a {TASKS[data.task].model_kind}, got {model!r}")
