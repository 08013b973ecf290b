"""Downstream metrics: COCO mAP for detection (through pycocotools), mIoU / mPA for segmentation.

Detection: :func:`coco_map` builds the ground truth and the detections as COCO objects in memory and runs
``pycocotools.cocoeval.COCOeval`` (``iouType="bbox"``, 101-point interpolated precision, at most 100 detections
per image, all object sizes): ``map`` is AP averaged over IoU 0.50:0.05:0.95 and over the categories that have
ground-truth objects, ``map50`` the AP at IoU 0.5. Categories without ground truth do not enter the mean, as in
COCO. With no ground-truth object at all both are NaN.

Segmentation: a confusion matrix over the labelled pixels (:func:`confusion_matrix`, ignored pixels left out),
then per class IoU = TP / (TP + FP + FN) and pixel accuracy = TP / (TP + FN); ``miou`` is the mean IoU over the
classes present in the ground truth or the prediction, ``mpa`` the mean pixel accuracy over the classes present
in the ground truth, ``pixel_accuracy`` the fraction of labelled pixels right.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sapnet.downstream.targets import IGNORE_INDEX, BoxTargets, Detections

__all__ = [
    "DetectionMAP",
    "SegmentationScores",
    "coco_map",
    "confusion_matrix",
    "segmentation_scores",
    "segmentation_scores_from_confusion",
]


def _xywh(boxes: torch.Tensor) -> np.ndarray:
    b = boxes.double().numpy()
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def coco_map(
    predictions: Sequence[Detections], targets: Sequence[BoxTargets], max_detections: int = 100
) -> dict[str, float]:
    """COCO box mAP of per-image detections against per-image ground truth.

    Args:
        predictions: one :class:`Detections` per image.
        targets: one :class:`BoxTargets` per image, same order (an image may have none: a negative image).
        max_detections: detections kept per image, highest scores first (COCO: 100).

    Returns:
        ``{"map": AP@[.5:.95], "map50": AP@.5}`` in [0, 1]; NaN when there is no ground-truth object.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("detection mAP needs pycocotools: pip install 'sapnet[downstream]'") from e
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[list[float]] = []  # rows [image_id, x, y, w, h, score, label] for COCO.loadRes
    categories: set[int] = set()
    for image_id, (pred, target) in enumerate(zip(predictions, targets, strict=True), start=1):
        images.append({"id": image_id})
        for box, label, crowd in zip(_xywh(target.boxes), target.labels.tolist(), target.crowd.tolist(), strict=True):
            ann_id = len(annotations) + 1
            area = float(box[2] * box[3])
            annotations.append(
                {"id": ann_id, "image_id": image_id, "category_id": label, "bbox": box.tolist(), "area": area,
                 "iscrowd": int(crowd)}
            )  # fmt: skip
            categories.add(label)
        order = torch.argsort(pred.scores, descending=True, stable=True)[:max_detections]
        for box, score, label in zip(
            _xywh(pred.boxes[order]), pred.scores[order].tolist(), pred.labels[order].tolist(), strict=True
        ):
            results.append([image_id, *box.tolist(), score, label])
            categories.add(label)
    if not annotations:
        return {"map": math.nan, "map50": math.nan}
    if not results:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in sorted(categories)],
        }
        gt.createIndex()
        dt = gt.loadRes(np.asarray(results, dtype=np.float64))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_detections]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats[:2]]
    return {"map": max(stats[0], 0.0), "map50": max(stats[1], 0.0)}


class DetectionMAP(nn.Module):
    """:func:`coco_map` accumulated over images: ``update(pred, target)`` per image, then ``compute()``.

    ``forward(predictions, targets)`` scores the given images alone, as :func:`coco_map`.
    """

    def __init__(self, max_detections: int = 100) -> None:
        super().__init__()
        self.max_detections = max_detections
        self.predictions: list[Detections] = []
        self.targets: list[BoxTargets] = []

    def reset(self) -> None:
        self.predictions.clear()
        self.targets.clear()

    def update(self, prediction: Detections, target: BoxTargets) -> None:
        self.predictions.append(prediction)
        self.targets.append(target)

    def compute(self) -> dict[str, float]:
        return coco_map(self.predictions, self.targets, self.max_detections)

    def forward(self, predictions: Sequence[Detections], targets: Sequence[BoxTargets]) -> dict[str, float]:
        return coco_map(predictions, targets, self.max_detections)


def confusion_matrix(
    prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Pixel confusion matrix.

    Args:
        prediction, target: integer label maps of the same shape (H, W) or (N, H, W); ``target`` pixels equal to
            ``ignore_index`` are left out.
        num_classes: C.

    Returns:
        int64 (C, C): entry ``[t, p]`` counts the pixels of true class ``t`` predicted as ``p``.

    Raises:
        ValueError: shapes differ, or a label outside ``0 .. C - 1`` (other than the ignored one in ``target``).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    p = prediction.reshape(-1).long().cpu()
    t = target.reshape(-1).long().cpu()
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    for what, x in (("prediction", p), ("target", t)):
        if len(x) and (int(x.min()) < 0 or int(x.max()) >= num_classes):
            raise ValueError(f"{what} holds labels outside 0..{num_classes - 1}: {sorted(set(x.unique().tolist()))}")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """``{"miou", "mpa", "pixel_accuracy"}`` from a (C, C) confusion matrix (rows = truth); NaN where undefined."""
    c = confusion.double()
    tp = c.diag()
    truth, predicted = c.sum(1), c.sum(0)
    union = truth + predicted - tp
    present = union > 0
    total = c.sum()
    return {
        "miou": (tp[present] / union[present]).mean().item() if present.any() else math.nan,
        "mpa": (tp[truth > 0] / truth[truth > 0]).mean().item() if (truth > 0).any() else math.nan,
        "pixel_accuracy": (tp.sum() / total).item() if total > 0 else math.nan,
    }


def segmentation_scores(
    prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> dict[str, float]:
    """mIoU, mPA and pixel accuracy of label maps (see :func:`confusion_matrix` for the arguments)."""
    return segmentation_scores_from_confusion(confusion_matrix(prediction, target, num_classes, ignore_index))


class SegmentationScores(nn.Module):
    """:func:`segmentation_scores` accumulated over images (one confusion matrix over all their pixels).

    ``forward(prediction, target)`` scores the given maps alone, as :func:`segmentation_scores`.
    """

    confusion: torch.Tensor

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.register_buffer("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), persistent=False)

    def reset(self) -> None:
        self.confusion.zero_()

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion += confusion_matrix(prediction, target, self.num_classes, self.ignore_index).to(
            self.confusion.device
        )

    def compute(self) -> dict[str, float]:
        return segmentation_scores_from_confusion(self.confusion)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return segmentation_scores(prediction, target, self.num_classes, self.ignore_index)
