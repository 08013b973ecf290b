"""Downstream test sets: clean images with their ground truth (or none: pseudo ground truth), and rainy versions.

:func:`load_downstream_set` reads

* the images: a paired derain set (any layout of :func:`sapnet.data.find_pairs`, e.g. Rain100L) gives rainy and
  clean images; a folder of clean images alone (e.g. COCO ``val2017/``) gets its rainy versions rendered by
  :func:`sapnet.data.synthesize_rain` later, with a fixed preset and seed;
* the ground truth: COCO-format detection annotations (a JSON file), or segmentation masks (a folder of index
  PNGs with a :class:`~sapnet.downstream.targets.ClassMap`), matched to the clean images by file name; or none,
  when the model's own predictions on the clean images are to serve as pseudo ground truth.

Problems in the ground truth (annotated images that are not on disk, images without an annotation entry or a
mask, unknown category ids, degenerate boxes, unknown mask values) are collected as readable messages in
:attr:`DownstreamSet.problems`; what is valid is kept.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from sapnet.data.datasets import LayoutNotFoundError, find_images, find_pairs
from sapnet.data.listing import list_images, plural, summarise
from sapnet.downstream.targets import BoxTargets, ClassMap

__all__ = ["AnnotationError", "DownstreamItem", "DownstreamSet", "Task", "load_coco", "load_downstream_set"]

Task = Literal["detection", "segmentation"]

_MASK_SUFFIXES = ("_gtFine_labelIds", "_gtFine_labelTrainIds", "_labelIds")
_IMAGE_SUFFIXES = ("_leftImg8bit",)


class AnnotationError(ValueError):
    """Annotations that cannot be used at all (unreadable file, not COCO format, no matching image)."""


@dataclass
class DownstreamItem:
    """One test image: its name, clean file, rainy file (``None``: to be rendered), and ground truth.

    ``boxes`` (detection) or ``mask`` (segmentation, a path read with the set's class map) is ``None`` under
    pseudo ground truth.
    """

    name: str
    clean: Path
    rainy: Path | None = None
    boxes: BoxTargets | None = None
    mask: Path | None = None


@dataclass
class DownstreamSet:
    """A downstream test set.

    Attributes:
        name: shown in tables.
        task: ``"detection"`` or ``"segmentation"``.
        items: the images scored, in natural order.
        ground_truth: where the ground truth comes from (a sentence for the table), ``None`` = pseudo ground truth.
        categories: detection category id -> name, from the annotations (empty under pseudo ground truth).
        class_map: the segmentation class map (``None`` under pseudo ground truth).
        problems: messages about what was skipped or dropped.
    """

    name: str
    task: Task
    items: list[DownstreamItem]
    ground_truth: str | None = None
    categories: dict[int, str] = field(default_factory=dict)
    class_map: ClassMap | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        """Whether the rainy images come with the set (else they are rendered)."""
        return all(item.rainy is not None for item in self.items)


def _strip(stem: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def load_coco(path: str | os.PathLike[str]) -> tuple[dict[str, BoxTargets], dict[int, str], list[str]]:
    """Read COCO-format detection annotations.

    Returns:
        (targets by image ``file_name`` (its last path component), category id -> name, problems). An image
        entry with no annotation is an image without objects (a negative), with empty targets. Annotations of
        unknown images or categories and boxes without area are dropped and reported; ``iscrowd`` is kept.

    Raises:
        AnnotationError: unreadable JSON, or not COCO format (no ``images`` / ``annotations`` / ``categories``).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        images = {int(im["id"]): Path(str(im["file_name"])).name for im in raw["images"]}
        categories = {int(c["id"]): str(c.get("name", c["id"])) for c in raw["categories"]}
        annotations = list(raw["annotations"])
    except FileNotFoundError:
        raise AnnotationError(f"annotation file {path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AnnotationError(
            f"{path}: not COCO-format detection annotations ({type(e).__name__}: {e}); expected a JSON object with "
            '"images" (id, file_name), "annotations" (image_id, category_id, bbox [x, y, w, h]) and "categories" '
            "(id, name)"
        ) from None
    boxes: dict[int, list[list[float]]] = {i: [] for i in images}
    labels: dict[int, list[int]] = {i: [] for i in images}
    crowd: dict[int, list[bool]] = {i: [] for i in images}
    bad: Counter[str] = Counter()
    unknown_categories: Counter[int] = Counter()
    for ann in annotations:
        try:
            image_id, category, (x, y, w, h) = int(ann["image_id"]), int(ann["category_id"]), map(float, ann["bbox"])
        except (KeyError, TypeError, ValueError):
            bad["malformed (no image_id, category_id or 4-number bbox)"] += 1
            continue
        if image_id not in images:
            bad["for image ids not in the image list"] += 1
        elif category not in categories:
            unknown_categories[category] += 1
        elif not (w > 0 and h > 0):
            bad["with boxes of zero or negative size"] += 1
        else:
            boxes[image_id].append([x, y, x + w, y + h])
            labels[image_id].append(category)
            crowd[image_id].append(bool(ann.get("iscrowd", 0)))
    problems = [f"{path.name}: dropped {plural(n, 'annotation')} {why}" for why, n in bad.items()]
    if unknown_categories:
        ids = ", ".join(f"{c} ({n}x)" for c, n in sorted(unknown_categories.items()))
        problems.append(f"{path.name}: dropped annotations with category ids not in its categories: {ids}")
    targets: dict[str, BoxTargets] = {}
    for image_id, name in images.items():
        if name in targets:
            problems.append(f"{path.name}: {name} is listed twice; the first entry is used")
            continue
        targets[name] = BoxTargets(
            torch.tensor(boxes[image_id]).reshape(-1, 4),
            torch.tensor(labels[image_id], dtype=torch.long),
            torch.tensor(crowd[image_id], dtype=torch.bool),
        )
    return targets, categories, problems


def _images(root: Path) -> tuple[list[tuple[str, Path, Path | None]], bool]:
    """(name, clean, rainy-or-None) and whether the folder is a paired derain set."""
    try:
        return [(p.name, p.clean, p.rainy) for p in find_pairs(root)], True
    except LayoutNotFoundError:
        return [(p.stem, p, None) for p in find_images(root)], False


def _match_annotations(
    images: list[tuple[str, Path, Path | None]], targets: dict[str, BoxTargets], source: Path
) -> tuple[list[DownstreamItem], list[str]]:
    by_file = {clean.name: i for i, (_, clean, _) in enumerate(images)}
    by_stem = {clean.stem: i for i, (_, clean, _) in enumerate(images)} | {n: i for i, (n, _, _) in enumerate(images)}
    matched: dict[int, BoxTargets] = {}
    missing = []
    for file_name, target in targets.items():
        index = by_file.get(file_name, by_stem.get(Path(file_name).stem))
        if index is None:
            missing.append(file_name)
        else:
            matched[index] = target
    problems = []
    if missing:
        problems.append(f"{source.name}: {plural(len(missing), 'annotated image')} not found: {summarise(missing)}")
    unannotated = [clean.name for i, (_, clean, _) in enumerate(images) if i not in matched]
    if unannotated:
        problems.append(
            f"{plural(len(unannotated), 'image')} without an entry in {source.name}, skipped: " + summarise(unannotated)
        )
    empty = [images[i][1].name for i, t in matched.items() if len(t) == 0]
    if empty:
        problems.append(f"{plural(len(empty), 'image')} without objects (kept as negatives): {summarise(empty)}")
    items = [DownstreamItem(n, c, r, boxes=matched[i]) for i, (n, c, r) in enumerate(images) if i in matched]
    return items, problems


def _match_masks(
    images: list[tuple[str, Path, Path | None]], masks_dir: Path
) -> tuple[list[DownstreamItem], list[str]]:
    if not masks_dir.is_dir():
        raise AnnotationError(f"mask folder {masks_dir} does not exist")
    masks: dict[str, Path] = {}
    for path in list_images(masks_dir, recursive=True):
        masks.setdefault(_strip(path.stem, _MASK_SUFFIXES), path)
    items, missing = [], []
    for name, clean, rainy in images:
        mask = masks.get(_strip(clean.stem, _IMAGE_SUFFIXES), masks.get(name))
        if mask is None:
            missing.append(clean.name)
        else:
            items.append(DownstreamItem(name, clean, rainy, mask=mask))
    problems = []
    if missing:
        problems.append(
            f"{plural(len(missing), 'image')} without a mask in {masks_dir}, skipped: " + summarise(missing)
        )
    return items, problems


def load_downstream_set(
    root: str | os.PathLike[str],
    task: Task,
    *,
    name: str | None = None,
    annotations: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    class_map: ClassMap | None = None,
    pseudo_gt: bool = False,
    limit: int | None = None,
) -> DownstreamSet:
    """Read a downstream test set (see the module docstring).

    Args:
        root: a paired derain set or a folder of clean images.
        task: ``"detection"`` or ``"segmentation"``.
        name: display name (default: the folder's name).
        annotations: COCO JSON (detection).
        masks: folder of index masks, matched by stem (``X.png`` for ``X.jpg``; Cityscapes
            ``*_gtFine_labelIds.png`` for ``*_leftImg8bit.png``), searched recursively (segmentation).
        class_map: how mask values map to classes (segmentation with masks; required then).
        pseudo_gt: no ground truth: score against the model's predictions on the clean images.
        limit: keep the first ``limit`` images (natural order) that have ground truth.

    Raises:
        DatasetError: no images. AnnotationError: no usable ground truth, or ground truth missing without
            ``pseudo_gt`` (the message names the options).
    """
    root = Path(root)
    display = name or root.resolve().name
    images, _ = _images(root)
    if task not in ("detection", "segmentation"):
        raise ValueError(f"task must be 'detection' or 'segmentation', got {task!r}")
    given = annotations if task == "detection" else masks
    if given is None and not pseudo_gt:
        option = "annotations (COCO JSON)" if task == "detection" else "masks (a folder of index masks)"
        raise AnnotationError(
            f"{display}: no ground truth for {task}: give {option}, or score against the model's own predictions "
            "on the clean images with pseudo ground truth (--pseudo-gt)"
        )
    if given is not None and pseudo_gt:
        raise ValueError("give ground truth or ask for pseudo ground truth, not both")
    problems: list[str] = []
    categories: dict[int, str] = {}
    if annotations is not None and task == "detection":
        targets, categories, problems = load_coco(annotations)
        items, more = _match_annotations(images, targets, Path(annotations))
        problems += more
        ground_truth = f"COCO annotations {Path(annotations).name}"
    elif masks is not None and task == "segmentation":
        if class_map is None:
            raise ValueError("segmentation masks need a class map (e.g. 'voc' or 'cityscapes')")
        items, problems = _match_masks(images, Path(masks))
        ground_truth = f"masks in {Path(masks).name}/ ({class_map.name} classes)"
    else:
        items = [DownstreamItem(n, c, r) for n, c, r in images]
        ground_truth = None
    if not items:
        raise AnnotationError(f"{display}: no image has ground truth. " + " ".join(problems))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        items = items[:limit]
    return DownstreamSet(
        display, task, items, ground_truth, categories, class_map if masks is not None else None, problems
    )
