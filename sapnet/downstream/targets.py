"""What downstream models predict and what they are scored against: boxes, label maps and class maps.

* :class:`Detections`: a detector's output for one image (boxes, scores, category ids);
* :class:`BoxTargets`: the ground-truth objects of one image (boxes, category ids, crowd flags);
* :class:`ClassMap`: how the values stored in segmentation masks map to the classes a segmenter predicts
  (``"voc"``: PASCAL VOC, index PNGs, 255 = boundary / ignore; ``"cityscapes"``: ``*_gtFine_labelIds.png`` mapped
  to the 19 evaluation classes, the other ids ignored), or a JSON file of the same fields.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "CLASS_MAPS",
    "IGNORE_INDEX",
    "BoxTargets",
    "ClassMap",
    "Detections",
    "MaskError",
    "load_class_map",
    "read_mask",
]

IGNORE_INDEX = 255
"""Label of pixels that no metric counts (VOC boundaries, Cityscapes void classes, unknown mask values)."""


class MaskError(ValueError):
    """A segmentation mask cannot be read or is not an index mask."""


def _boxes(x: torch.Tensor | None, n: int = 0) -> torch.Tensor:
    return torch.zeros(n, 4) if x is None else torch.as_tensor(x, dtype=torch.float32).reshape(-1, 4)


@dataclass(frozen=True)
class Detections:
    """A detector's output for one image.

    Attributes:
        boxes: float32 (N, 4), ``x1, y1, x2, y2`` in pixels of the image the detector saw.
        scores: float32 (N,), confidence in [0, 1].
        labels: int64 (N,), COCO category ids (1..90) for COCO detectors.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", _boxes(self.boxes.detach().cpu()))
        object.__setattr__(self, "scores", self.scores.detach().cpu().float().reshape(-1))
        object.__setattr__(self, "labels", self.labels.detach().cpu().long().reshape(-1))
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError(
                f"boxes, scores and labels differ in length: {len(self.boxes)}, {len(self.scores)}, {len(self.labels)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))

    def above(self, threshold: float) -> Detections:
        """The detections with ``score >= threshold``."""
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    def as_targets(self) -> BoxTargets:
        """These detections as ground truth (pseudo ground truth from a detector's output on clean images)."""
        return BoxTargets(self.boxes, self.labels)


@dataclass(frozen=True)
class BoxTargets:
    """The ground-truth objects of one image.

    Attributes:
        boxes: float32 (N, 4), ``x1, y1, x2, y2`` in pixels.
        labels: int64 (N,), category ids.
        crowd: bool (N,), COCO ``iscrowd`` (crowd regions neither count as misses nor make detections false).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    crowd: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", _boxes(self.boxes.detach().cpu()))
        object.__setattr__(self, "labels", self.labels.detach().cpu().long().reshape(-1))
        crowd = self.crowd if len(self.crowd) else torch.zeros(len(self.labels), dtype=torch.bool)
        object.__setattr__(self, "crowd", crowd.bool().reshape(-1))
        if not len(self.boxes) == len(self.labels) == len(self.crowd):
            raise ValueError(
                f"boxes, labels and crowd differ in length: {len(self.boxes)}, {len(self.labels)}, {len(self.crowd)}"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ClassMap:
    """The classes of a segmentation task and how stored mask values map to them.

    Attributes:
        name: shown in tables.
        classes: class names; the index is the class id a segmenter predicts.
        ids: stored mask value -> class id. Empty: values ``0 .. len(classes) - 1`` are the class ids.
        void: stored values that are ignored on purpose (VOC's 255 boundary, Cityscapes' void ids). Any other
            value outside the map is *unknown*: it is ignored too, and reported.
    """

    name: str
    classes: tuple[str, ...]
    ids: dict[int, int] = field(default_factory=dict)
    void: frozenset[int] = frozenset({IGNORE_INDEX})

    def __post_init__(self) -> None:
        bad = {v: c for v, c in self.ids.items() if not 0 <= c < len(self.classes)}
        if bad:
            raise ValueError(f"class map {self.name!r}: ids {bad} point outside its {len(self.classes)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def lookup_table(self, max_value: int) -> np.ndarray:
        """int64 array of length ``max_value + 1``: stored value -> class id, :data:`IGNORE_INDEX` elsewhere."""
        table = np.full(max_value + 1, IGNORE_INDEX, np.int64)
        pairs = self.ids.items() if self.ids else ((i, i) for i in range(self.num_classes))
        for value, cls in pairs:
            if value <= max_value:
                table[value] = cls
        return table

    def encode(self, values: np.ndarray) -> tuple[torch.Tensor, dict[int, int]]:
        """Stored mask values (H, W) integers -> (class ids int64 (H, W) with :data:`IGNORE_INDEX`, unknown
        values with their pixel counts)."""
        values = values.astype(np.int64)
        if values.size and values.min() < 0:
            raise MaskError("mask holds negative values")
        top = int(values.max()) if values.size else 0
        labels = self.lookup_table(top)[values]
        known = set(self.ids) if self.ids else set(range(self.num_classes))
        stray = np.isin(values, sorted(known | set(self.void)), invert=True)
        unknown: dict[int, int] = {}
        if stray.any():
            found, counts = np.unique(values[stray], return_counts=True)
            unknown = {int(v): int(c) for v, c in zip(found, counts, strict=True)}
        return torch.from_numpy(labels), unknown


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

# Cityscapes labelIds of the 19 evaluation classes, in train-id order (the dataset's labels.py).
_CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

CLASS_MAPS: dict[str, ClassMap] = {
    "voc": ClassMap("voc", VOC_CLASSES),
    "cityscapes": ClassMap(
        "cityscapes",
        CITYSCAPES_CLASSES,
        ids={label_id: train_id for train_id, label_id in enumerate(_CITYSCAPES_LABEL_IDS)},
        void=frozenset(set(range(34)) - set(_CITYSCAPES_LABEL_IDS)) | {IGNORE_INDEX},
    ),
}
"""Built-in class maps: ``"voc"`` (21 classes, index PNGs) and ``"cityscapes"`` (labelIds -> 19 classes)."""


def load_class_map(spec: str | os.PathLike[str]) -> ClassMap:
    """A built-in class map by name, or one read from a JSON file.

    The file holds ``{"classes": [names...], "ids": {"<stored value>": <class id>, ...}, "void": [values...]}``;
    ``ids`` and ``void`` are optional (default: identity and ``[255]``).

    Raises:
        ValueError: an unknown name, an unreadable file or a malformed map (the message says which).
    """
    if str(spec) in CLASS_MAPS:
        return CLASS_MAPS[str(spec)]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"class map {spec!r} is neither a built-in one ({', '.join(CLASS_MAPS)}) nor a JSON file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        classes = tuple(str(c) for c in raw["classes"])
        ids = {int(k): int(v) for k, v in raw.get("ids", {}).items()}
        void = frozenset(int(v) for v in raw.get("void", [IGNORE_INDEX]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{path}: not a class map ({type(e).__name__}: {e}); expected "
            '{"classes": [...], "ids": {"value": id}, "void": [...]}'
        ) from None
    if not classes:
        raise ValueError(f"{path}: the class map has no classes")
    return ClassMap(path.stem, classes, ids, void)


def read_mask(path: str | os.PathLike[str], class_map: ClassMap) -> tuple[torch.Tensor, dict[int, int]]:
    """Read an index mask (PNG of mode P, L, I or I;16) and map it with ``class_map``.

    Returns:
        (int64 (H, W) class ids with :data:`IGNORE_INDEX`, unknown stored values -> pixel counts).

    Raises:
        MaskError: unreadable file, or a colour (RGB) mask, which holds colours rather than class ids.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise MaskError(
                    f"{path}: a {mode} image is not an index mask (give the class-id PNGs, e.g. VOC "
                    "SegmentationClass or Cityscapes *_gtFine_labelIds.png, not colour renderings)"
                )
            values = np.asarray(im)
    except MaskError:
        raise
    except (OSError, ValueError) as e:
        raise MaskError(f"{path}: cannot read the mask ({e})") from None
    return class_map.encode(values)
