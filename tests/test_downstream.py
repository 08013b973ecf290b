"""Downstream benchmark: metric plumbing (mAP, mIoU, mPA), ground-truth readers, models, runner and CLI.

Offline, on tiny generated images with synthetic annotations, fake or randomly initialised models; the YOLOX
ONNX detector of ``shared/models`` is checked when present.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sapnet.cli.main import main
from sapnet.data import write_image
from sapnet.downstream import (
    CLASS_MAPS,
    COCO_CATEGORIES,
    IGNORE_INDEX,
    TASKS,
    AnnotationError,
    BoxTargets,
    ClassMap,
    DetectionMAP,
    Detections,
    Detector,
    MaskError,
    ModelUnavailableError,
    RandomModelWarning,
    SegmentationScores,
    Segmenter,
    TorchvisionDetector,
    TorchvisionSegmenter,
    YoloxOnnxDetector,
    coco_map,
    confusion_matrix,
    create_task,
    evaluate_downstream,
    load_class_map,
    load_coco,
    load_downstream_set,
    read_mask,
    segmentation_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _det(boxes, scores, labels) -> Detections:
    return Detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores), torch.tensor(labels)
    )


def _gt(boxes, labels, crowd=None) -> BoxTargets:
    crowd_t = torch.tensor(crowd, dtype=torch.bool) if crowd is not None else torch.zeros(0, dtype=torch.bool)
    return BoxTargets(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels), crowd_t)


# ------------------------------------------------------------------------------------------------ detection mAP


@pytest.mark.parametrize("images", [1, 3])
@pytest.mark.parametrize("classes", [1, 4])
def test_perfect_detections_give_map_one(images: int, classes: int) -> None:
    gen = torch.Generator().manual_seed(images * 10 + classes)
    targets, preds = [], []
    for _ in range(images):
        xy = torch.rand(5, 2, generator=gen) * 200
        boxes = torch.cat([xy, xy + 10 + torch.rand(5, 2, generator=gen) * 50], 1)
        labels = torch.randint(1, classes + 1, (5,), generator=gen)
        targets.append(BoxTargets(boxes, labels))
        preds.append(Detections(boxes, torch.rand(5, generator=gen) * 0.5 + 0.5, labels))
    targets.append(_gt([], []))  # a negative image, nothing predicted on it
    preds.append(Detections.empty())
    scores = coco_map(preds, targets)
    assert scores["map"] == pytest.approx(1.0) and scores["map50"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("height", "expected_map"),
    [(62.0, 0.3), (77.0, 0.6), (96.0, 1.0), (45.0, 0.0)],  # IoU = height / 100: thresholds .50, .55, ... passed
)
def test_partial_overlap_gives_known_map(height: float, expected_map: float) -> None:
    scores = coco_map([_det([[0, 0, 100, height]], [0.9], [1])], [_gt([[0, 0, 100, 100]], [1])])
    assert scores["map"] == pytest.approx(expected_map)
    assert scores["map50"] == pytest.approx(0.0 if height < 50 else 1.0)


def test_false_positive_on_negative_image_halves_ap() -> None:
    # image 1: its object found at score 0.5; image 2 (no objects): a false detection at 0.9 ranks first
    preds = [_det([[10, 10, 50, 50]], [0.5], [1]), _det([[0, 0, 30, 30]], [0.9], [1])]
    targets = [_gt([[10, 10, 50, 50]], [1]), _gt([], [])]
    assert coco_map(preds, targets)["map50"] == pytest.approx(0.5)


def test_wrong_class_is_a_miss_and_crowd_is_neither() -> None:
    assert coco_map([_det([[0, 0, 10, 10]], [0.9], [2])], [_gt([[0, 0, 10, 10]], [1])])["map"] == 0.0
    # a detection on a crowd region is not a false positive: AP of the real object stays 1
    preds = [_det([[0, 0, 10, 10], [50, 50, 90, 90]], [0.5, 0.9], [1, 1])]
    targets = [_gt([[0, 0, 10, 10], [50, 50, 90, 90]], [1, 1], crowd=[False, True])]
    assert coco_map(preds, targets)["map"] == pytest.approx(1.0)


def test_map_without_objects_or_detections() -> None:
    assert all(math.isnan(v) for v in coco_map([Detections.empty()], [_gt([], [])]).values())
    assert coco_map([Detections.empty()], [_gt([[0, 0, 5, 5]], [1])]) == {"map": 0.0, "map50": 0.0}
    with pytest.raises(ValueError, match="2 predictions for 1 images"):
        coco_map([Detections.empty()] * 2, [_gt([], [])])


def test_detection_map_module_matches_function() -> None:
    preds = [_det([[0, 0, 10, 7]], [0.9], [1]), _det([[5, 5, 20, 20]], [0.4], [3])]
    targets = [_gt([[0, 0, 10, 10]], [1]), _gt([[5, 5, 20, 20]], [3])]
    meter = DetectionMAP()
    for p, t in zip(preds, targets, strict=True):
        meter.update(p, t)
    assert meter.compute() == coco_map(preds, targets) == meter(preds, targets)
    meter.reset()
    assert meter.predictions == [] and meter.targets == []


def test_detections_validate_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Detections(torch.zeros(2, 4), torch.zeros(1), torch.zeros(2))
    d = _det([[0, 0, 1, 1], [0, 0, 2, 2]], [0.2, 0.6], [1, 2])
    assert len(d.above(0.5)) == 1 and d.above(0.5).labels.tolist() == [2]
    assert torch.equal(d.as_targets().boxes, d.boxes)


# ------------------------------------------------------------------------------------------------- segmentation


def test_known_segmentation_scores() -> None:
    target = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 1], [1, 1]])
    # class 0: TP 1, FN 1 -> IoU 1/2, accuracy 1/2; class 1: TP 2, FP 1 -> IoU 2/3, accuracy 1
    scores = segmentation_scores(pred, target, num_classes=3)  # class 2 absent everywhere: not averaged
    assert scores["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores["mpa"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 4)
    assert confusion_matrix(pred, target, 3).tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


@pytest.mark.parametrize("shape", [(7, 9), (2, 5, 6)])
def test_perfect_segmentation_and_ignored_pixels(shape: tuple[int, ...]) -> None:
    target = torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(1))
    assert segmentation_scores(target, target, 4) == {"miou": 1.0, "mpa": 1.0, "pixel_accuracy": 1.0}
    noisy = target.clone().reshape(-1)
    noisy[::3] = IGNORE_INDEX  # ignored in the truth: whatever is predicted there does not count
    pred = target.clone().reshape(-1)
    pred[::3] = (pred[::3] + 1) % 4
    assert segmentation_scores(pred.reshape(shape), noisy.reshape(shape), 4)["miou"] == 1.0


def test_predicted_only_class_lowers_miou_not_mpa() -> None:
    target = torch.zeros(2, 2, dtype=torch.long)
    pred = torch.tensor([[0, 0], [0, 1]])
    scores = segmentation_scores(pred, target, 2)
    assert scores["miou"] == pytest.approx((3 / 4 + 0) / 2)
    assert scores["mpa"] == pytest.approx(3 / 4)


def test_confusion_matrix_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 3)


def test_segmentation_module_accumulates_pixels() -> None:
    gen = torch.Generator().manual_seed(3)
    preds = [torch.randint(0, 3, (4, 5), generator=gen) for _ in range(3)]
    targets = [torch.randint(0, 3, (4, 5), generator=gen) for _ in range(3)]
    meter = SegmentationScores(3)
    for p, t in zip(preds, targets, strict=True):
        meter.update(p, t)
    assert meter.compute() == segmentation_scores(torch.stack(preds), torch.stack(targets), 3)
    assert meter(preds[0], targets[0]) == segmentation_scores(preds[0], targets[0], 3)
    meter.reset()
    assert meter.confusion.sum() == 0


# -------------------------------------------------------------------------------------------------- class maps


def test_voc_and_cityscapes_class_maps() -> None:
    voc = CLASS_MAPS["voc"]
    labels, unknown = voc.encode(np.array([[0, 20, 255], [21, 40, 3]], np.uint8))
    assert labels.tolist() == [[0, 20, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 3]]
    assert unknown == {21: 1, 40: 1}  # outside the map: ignored and reported; 255 is VOC's boundary, silent
    city = CLASS_MAPS["cityscapes"]
    labels, unknown = city.encode(np.array([[7, 26, 0], [33, 4, 34]], np.uint8))
    assert labels.tolist() == [[0, 13, IGNORE_INDEX], [18, IGNORE_INDEX, IGNORE_INDEX]]
    assert unknown == {34: 1} and city.num_classes == 19


def test_class_map_file(tmp_path: Path) -> None:
    path = tmp_path / "three.json"
    path.write_text(json.dumps({"classes": ["bg", "road", "car"], "ids": {"10": 1, "20": 2, "0": 0}, "void": [99]}))
    cmap = load_class_map(path)
    assert cmap.name == "three" and cmap.classes == ("bg", "road", "car")
    assert cmap.encode(np.array([10, 20, 0, 99, 255]))[0].tolist() == [1, 2, 0, IGNORE_INDEX, IGNORE_INDEX]
    bad = tmp_path / "bad.json"
    bad.write_text('{"names": []}')
    with pytest.raises(ValueError, match="not a class map"):
        load_class_map(bad)
    with pytest.raises(ValueError, match="neither a built-in"):
        load_class_map("pascal")
    with pytest.raises(ValueError, match="outside its 2 classes"):
        ClassMap("x", ("a", "b"), ids={1: 5})


@pytest.mark.parametrize("mode", ["P", "L", "I;16"])
def test_read_mask_modes(tmp_path: Path, mode: str) -> None:
    values = np.array([[0, 1], [2, 255]])
    if mode == "I;16":
        image = Image.fromarray(values.astype(np.uint16))  # 16-bit masks (e.g. many-class label maps)
    else:
        image = Image.fromarray(values.astype(np.uint8), mode="L")
        if mode == "P":  # VOC SegmentationClass: palette PNGs whose indices are the class ids
            image = image.convert("P")
            image.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tobytes())
    image.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == mode
    labels, unknown = read_mask(tmp_path / "m.png", CLASS_MAPS["voc"])
    assert labels.tolist() == [[0, 1], [2, IGNORE_INDEX]] and unknown == {}


def test_read_mask_rejects_colour_and_garbage(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (128, 64, 0)).save(tmp_path / "colour.png")
    with pytest.raises(MaskError, match="not an index mask"):
        read_mask(tmp_path / "colour.png", CLASS_MAPS["voc"])
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match="cannot read"):
        read_mask(tmp_path / "junk.png", CLASS_MAPS["voc"])


# ------------------------------------------------------------------------------------------- tiny annotated sets


def _image(seed: int, size: tuple[int, int] = (40, 48)) -> torch.Tensor:
    """A dark image with one bright square; the square's box is the 'object'."""
    img = torch.full((3, *size), 0.1)
    x, y = 4 + 3 * seed, 6 + 2 * seed
    img[:, y : y + 16, x : x + 12] = 0.9
    return img


def _box(seed: int) -> list[float]:
    x, y = 4 + 3 * seed, 6 + 2 * seed
    return [x, y, x + 12, y + 16]


def _coco_set(root: Path, n: int = 3) -> Path:
    """``root/images/*.png`` (clean only) and ``root/ann.json`` with one object (category 18, dog) each."""
    images = root / "images"
    for i in range(n):
        write_image(_image(i), images / f"im{i}.png")
    x1, y1, x2, y2 = 0, 0, 0, 0
    anns = []
    for i in range(n):
        x1, y1, x2, y2 = _box(i)
        anns.append({"id": i + 1, "image_id": i, "category_id": 18, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    coco = {
        "images": [{"id": i, "file_name": f"val/im{i}.png"} for i in range(n)],
        "annotations": anns,
        "categories": [{"id": 18, "name": "dog"}],
    }
    (root / "ann.json").write_text(json.dumps(coco))
    return root


class BrightSquareDetector:
    """Finds the bright square when the image is clean enough; a fake :class:`Detector` for plumbing tests."""

    name = "bright-square"
    categories = COCO_CATEGORIES

    def __call__(self, image: torch.Tensor) -> Detections:
        bright = image.mean(0) > 0.6
        if not bright.any() or image.mean(0)[~bright].mean() > 0.2:  # rain lifts the dark background
            return Detections.empty()
        ys, xs = torch.nonzero(bright, as_tuple=True)
        box = [[xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]]
        return _det(box, [0.95], [18])


class ThresholdSegmenter:
    """Class 1 where the image is bright, 0 elsewhere; a fake :class:`Segmenter`."""

    name = "threshold"
    classes = ("background", "square", "spare")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image.mean(0) > 0.5).long()


def test_fakes_follow_the_protocols() -> None:
    assert isinstance(BrightSquareDetector(), Detector) and not isinstance(BrightSquareDetector(), Segmenter)
    assert isinstance(ThresholdSegmenter(), Segmenter) and not isinstance(ThresholdSegmenter(), Detector)


def test_load_coco_reports_problems(tmp_path: Path) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
            {"image_id": 1, "category_id": 77, "bbox": [0, 0, 5, 5]},  # unknown category
            {"image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5]},  # unknown image
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 5]},  # no area
            {"image_id": 1, "category_id": 1},  # no box
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    targets, categories, problems = load_coco(tmp_path / "a.json")
    assert categories == {1: "person"}
    assert len(targets["a.png"]) == 1 and len(targets["b.png"]) == 0
    text = "\n".join(problems)
    assert "category ids not in its categories: 77 (1x)" in text
    assert "image ids not in the image list" in text and "zero or negative size" in text and "malformed" in text
    (tmp_path / "b.json").write_text('{"images": []}')
    with pytest.raises(AnnotationError, match="not COCO-format"):
        load_coco(tmp_path / "b.json")
    with pytest.raises(AnnotationError, match="does not exist"):
        load_coco(tmp_path / "missing.json")


def test_load_set_matches_annotations(tmp_path: Path) -> None:
    root = _coco_set(tmp_path, n=3)
    write_image(_image(5), root / "images" / "extra.png")  # on disk, not annotated
    ann = json.loads((root / "ann.json").read_text())
    ann["images"].append({"id": 7, "file_name": "gone.png"})  # annotated, not on disk
    (root / "ann.json").write_text(json.dumps(ann))
    data = load_downstream_set(root / "images", "detection", annotations=root / "ann.json")
    assert [i.name for i in data.items] == ["im0", "im1", "im2"] and not data.paired
    assert data.items[1].boxes is not None and data.items[1].boxes.boxes.tolist() == [_box(1)]
    text = "\n".join(data.problems)
    assert "1 annotated image not found: gone.png" in text
    assert "1 image without an entry in ann.json, skipped: extra.png" in text
    assert [
        i.name for i in load_downstream_set(root / "images", "detection", annotations=root / "ann.json", limit=2).items
    ] == ["im0", "im1"]


def test_load_set_needs_ground_truth_or_pseudo(tmp_path: Path) -> None:
    root = _coco_set(tmp_path)
    with pytest.raises(AnnotationError, match="--pseudo-gt"):
        load_downstream_set(root / "images", "detection")
    with pytest.raises(AnnotationError, match="no image has ground truth"):
        (tmp_path / "other.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}],
                                                          "annotations": [], "categories": []}))  # fmt: skip
        load_downstream_set(root / "images", "detection", annotations=tmp_path / "other.json")
    data = load_downstream_set(root / "images", "segmentation", pseudo_gt=True)
    assert data.ground_truth is None and len(data.items) == 3


def test_masks_match_by_name_including_cityscapes(tmp_path: Path) -> None:
    images, masks = tmp_path / "img", tmp_path / "gt" / "city"
    for stem in ("a", "b_leftImg8bit", "c"):
        write_image(_image(0), images / f"{stem}.png")
    masks.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "b_gtFine_labelIds.png")
    data = load_downstream_set(images, "segmentation", masks=tmp_path / "gt", class_map=CLASS_MAPS["cityscapes"])
    assert {i.name: i.mask.name for i in data.items} == {"a": "a.png", "b_leftImg8bit": "b_gtFine_labelIds.png"}
    assert "1 image without a mask" in data.problems[0] and "c.png" in data.problems[0]


# ------------------------------------------------------------------------------------------------------ runner


def test_runner_detection_end_to_end(tmp_path: Path) -> None:
    root = _coco_set(tmp_path / "set")
    outputs = tmp_path / "perfect"  # a "method" whose outputs are the clean images
    for i in range(3):
        write_image(_image(i), outputs / f"im{i}.png")
    data = load_downstream_set(root / "images", "detection", annotations=root / "ann.json")
    messages: list[str] = []
    result = evaluate_downstream(
        data, BrightSquareDetector(), [f"Oracle={outputs}"], tmp_path / "out", progress=False, log=messages.append
    )
    assert result.columns == ["Rainy", "Oracle", "Clean"] and result.images == 3
    assert result.scores["Clean"] == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0)}
    assert result.scores["Oracle"]["map"] == pytest.approx(1.0)
    assert result.scores["Rainy"] == {"map": 0.0, "map50": 0.0}  # heavy rain hides the square from the fake
    assert result.problems == [] and messages == []
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| mAP@[.5:.95] ↑ | 0.0000 | 1.0000 | 1.0000 |" in table and "COCO annotations ann.json" in table
    assert "preset 'heavy', seed 0" in table
    saved = json.loads((tmp_path / "out" / "table.json").read_text())
    assert saved["scores"]["Oracle"]["map50"] == pytest.approx(1.0) and saved["images"] == 3
    assert (tmp_path / "out" / "table.csv").read_text().splitlines()[0] == "metric,Rainy,Oracle,Clean"
    assert Image.open(tmp_path / "out" / "grid.png").size[0] > 4 * 320
    rendered = sorted(p.name for p in (tmp_path / "out" / "rainy").iterdir())
    assert rendered == ["im0.png", "im1.png", "im2.png"]
    # the rendering is deterministic: a second run scores the same and writes the same rainy images
    first = (tmp_path / "out" / "rainy" / "im1.png").read_bytes()
    again = evaluate_downstream(data, BrightSquareDetector(), [], tmp_path / "out2", progress=False)
    assert (tmp_path / "out2" / "rainy" / "im1.png").read_bytes() == first
    assert again.scores["Rainy"] == result.scores["Rainy"]


class InterruptingIdentity(torch.nn.Module):
    """A derain "network" returning its input for ``after`` images, then raising ``KeyboardInterrupt`` (Ctrl-C)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return x


@pytest.mark.parametrize("after", [0, 2])
def test_runner_interrupted_writes_the_partial_table(tmp_path: Path, after: int) -> None:
    from sapnet.evaluation import Method

    root = _coco_set(tmp_path / "set", n=3)
    data = load_downstream_set(root / "images", "detection", annotations=root / "ann.json")
    messages: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        evaluate_downstream(
            data, BrightSquareDetector(), [Method("Id", model=InterruptingIdentity(after))], tmp_path / "out",
            progress=False, log=messages.append,
        )  # fmt: skip
    saved = json.loads((tmp_path / "out" / "table.json").read_text())
    assert saved["images"] == after and saved["columns"] == ["Rainy", "Id", "Clean"]
    assert saved["note"].startswith(f"PARTIAL results: interrupted after {after} images were scored.")
    assert f"Detection on {data.name} ({after} images)" in (tmp_path / "out" / "table.md").read_text()
    assert messages[-1].startswith(f"interrupted after {after} images: partial table in")


def test_runner_bad_inputs_complete_with_what_is_valid(tmp_path: Path) -> None:
    root = _coco_set(tmp_path / "set", n=4)
    (root / "images" / "im3.png").write_bytes(b"broken")  # unreadable image: left out
    outputs = tmp_path / "partial"
    for i in (0, 1, 3):  # no output for im2: left out of every column
        write_image(_image(i), outputs / f"im{i}.png")
    data = load_downstream_set(root / "images", "detection", annotations=root / "ann.json")
    result = evaluate_downstream(
        data, BrightSquareDetector(), [f"M={outputs}", "Missing=/no/such/model.pth"], None, progress=False,
        log=lambda _: None,
    )  # fmt: skip
    assert result.columns == ["Rainy", "M", "Clean"] and result.images == 2
    text = "\n".join(result.problems)
    assert "method Missing=/no/such/model.pth left out" in text
    assert "im2 left out of every column: M:" in text and "im3 left out of every column" in text
    assert result.scores["M"]["map"] == pytest.approx(1.0)


def test_runner_pseudo_ground_truth_on_paired_set(tmp_path: Path) -> None:
    for i in range(2):
        write_image(_image(i), tmp_path / "clean" / f"{i}.png")
        write_image(_image(i).clamp(0.3, 1), tmp_path / "rain" / f"{i}.png")  # lifted background: nothing found
    data = load_downstream_set(tmp_path, "detection", pseudo_gt=True)
    assert data.paired
    result = evaluate_downstream(data, BrightSquareDetector(), [], tmp_path / "out", progress=False)
    assert result.scores["Clean"]["map"] == pytest.approx(1.0) and result.scores["Rainy"]["map"] == 0.0
    assert "PSEUDO ground truth" in result.note and "the set's own rainy images" in result.note
    assert not (tmp_path / "out" / "rainy").exists()


def test_runner_reports_empty_pseudo_ground_truth(tmp_path: Path) -> None:
    write_image(torch.full((3, 16, 16), 0.1), tmp_path / "clean" / "0.png")
    write_image(torch.full((3, 16, 16), 0.2), tmp_path / "rain" / "0.png")
    data = load_downstream_set(tmp_path, "detection", pseudo_gt=True)
    result = evaluate_downstream(data, BrightSquareDetector(), [], None, progress=False, log=lambda _: None)
    assert math.isnan(result.scores["Clean"]["map"])
    assert "no ground-truth object" in result.problems[0] and "found nothing" in result.problems[0]


def test_runner_segmentation_with_masks(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    masks.mkdir()
    for i in range(2):
        img = _image(i)
        write_image(img, images / f"s{i}.png")
        mask = (img.mean(0) > 0.5).numpy().astype(np.uint8)
        mask[0, :] = 255  # a void row
        mask[1, 0] = 9  # a value outside the map
        Image.fromarray(mask).save(masks / f"s{i}.png")
    cmap = load_class_map_three(tmp_path)
    data = load_downstream_set(images, "segmentation", masks=masks, class_map=cmap)
    result = evaluate_downstream(
        data, ThresholdSegmenter(), [], tmp_path / "out", rain="light", seed=3, progress=False, log=lambda _: None
    )
    assert result.scores["Clean"]["miou"] == pytest.approx(1.0) and result.scores["Clean"]["mpa"] == pytest.approx(1.0)
    assert result.scores["Rainy"]["miou"] < 1.0
    assert result.problems == ["mask values outside the class map, ignored: 9 (2 px)"]
    assert "| mIoU ↑ |" in (tmp_path / "out" / "table.md").read_text()
    with pytest.raises(ValueError, match="predicts 3 classes but the class map voc has 21"):
        data.class_map = CLASS_MAPS["voc"]
        evaluate_downstream(data, ThresholdSegmenter(), [], None, progress=False)
    with pytest.raises(ValueError, match="needs a detector"):
        evaluate_downstream(load_downstream_set(images, "detection", pseudo_gt=True), ThresholdSegmenter())


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_task_interface_scores_predictions_and_pseudo_truth(tmp_path: Path, task: str) -> None:
    write_image(_image(0), tmp_path / "images" / "a.png")
    data = load_downstream_set(tmp_path / "images", task, pseudo_gt=True)  # type: ignore[arg-type]
    model = BrightSquareDetector() if task == "detection" else ThresholdSegmenter()
    other = ThresholdSegmenter() if task == "detection" else BrightSquareDetector()
    with pytest.raises(ValueError, match=f"needs a {TASKS[task].model_kind}"):
        create_task(data, other)
    t = create_task(data, model)
    assert isinstance(t, TASKS[task]) and t.name == task
    assert t.target(data.items[0], (40, 48)) is None  # pseudo ground truth: none stored
    clean, blank = _image(0), torch.full((3, 40, 48), 0.3)
    target = t.pseudo_target(model(clean))
    t.update({"Clean": model(clean), "Blank": model(blank)}, target)
    scores = t.compute(["Clean", "Blank", "Unseen"])
    keys = [m.key for m in t.metrics]
    assert all(scores["Clean"][k] == pytest.approx(1.0) for k in keys)
    assert scores["Blank"][keys[0]] < 1.0 and scores["Unseen"] == {} and t.images == 1
    assert t.draw(clean, target).shape[0] == 3 and t.finish() == []


def load_class_map_three(tmp_path: Path) -> ClassMap:
    path = tmp_path / "three.json"
    path.write_text(json.dumps({"classes": ["background", "square", "spare"]}))
    return load_class_map(path)


# ------------------------------------------------------------------------------------------------------ models


def _constant_yolox(path: Path, anchors: int = 3549, classes: int = 80, hit: int = 0) -> Path:
    """An ONNX model with YOLOX's input / output signature whose output is a fixed array: anchor ``hit``
    (stride 8, cell (x=0, y=0)) holds one confident class-0 box of offset (0.5, 0.5) and size exp(1) * 8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    raw = np.zeros((1, anchors, 5 + classes), np.float32)
    raw[0, :, 2:4] = -5.0
    raw[0, hit, :5] = [0.5, 0.5, 1.0, 1.0, 0.9]
    raw[0, hit, 5] = 1.0
    node = helper.make_node("Constant", [], ["output"], value=numpy_helper.from_array(raw, "raw"))
    graph = helper.make_graph(
        [node],
        "yolox_stub",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, anchors, 5 + classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_yolox_decoding(tmp_path: Path) -> None:
    detector = YoloxOnnxDetector(_constant_yolox(tmp_path / "stub.onnx"), threads=1)
    image = torch.rand(3, 208, 104)  # scale 2 into the 416 input
    x, scale = detector.preprocess(image)
    assert x.shape == (1, 3, 416, 416) and scale == 2.0
    assert np.all(x[0, :, :, 208:] == 114) and x.max() <= 255  # letterbox pad on the right
    detections = detector(image)
    assert len(detections) == 1 and detections.labels.tolist() == [1]  # class 0 = COCO id 1, person
    centre, half = 0.5 * 8, math.exp(1.0) * 8 / 2
    expected = torch.tensor([[0, 0, (centre + half) / 2, (centre + half) / 2]])  # clipped at 0, in image pixels
    assert torch.allclose(detections.boxes, expected, atol=1e-4)
    assert detections.scores.item() == pytest.approx(0.9)


def test_yolox_rejects_other_models(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="80-class YOLOX"):
        YoloxOnnxDetector(_constant_yolox(tmp_path / "three.onnx", classes=3))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        YoloxOnnxDetector(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelUnavailableError, match="not a loadable ONNX model"):
        YoloxOnnxDetector(tmp_path / "junk.onnx")


def test_shared_yolox_on_rain100l(shared_dir: Path, rain100l_dir: Path) -> None:
    path = shared_dir / "models" / "yolox_nano_coco" / "yolox_nano.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from sapnet.data import read_image

    detections = YoloxOnnxDetector(path, threads=1)(read_image(rain100l_dir / "clean" / "001.png")).above(0.5)
    names = [COCO_CATEGORIES[int(i)] for i in detections.labels]
    assert "bear" in names  # the brown bear of the first Rain100L background
    bear = detections.boxes[names.index("bear")]
    assert 20 < bear[0] < 80 and 300 < bear[2] < 400  # its box spans most of the 481-pixel width


def test_random_torchvision_models(tmp_path: Path) -> None:
    with pytest.warns(RandomModelWarning, match="random weights"):
        detector = TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn", "random")
    out = detector(torch.rand(3, 64, 80))
    assert isinstance(out, Detections) and "random (seed 0)" in repr(detector)
    with pytest.warns(RandomModelWarning):
        segmenter = TorchvisionSegmenter("lraspp_mobilenet_v3_large", "random", num_classes=5)
    labels = segmenter(torch.rand(3, 33, 47))
    assert labels.shape == (33, 47) and labels.dtype == torch.long and int(labels.max()) < 5
    assert len(segmenter.classes) == 5
    # a state-dict file: class count read from it, loaded strictly; a file of another network is refused
    torch.save(segmenter.model.state_dict(), tmp_path / "seg.pth")
    loaded = TorchvisionSegmenter("lraspp_mobilenet_v3_large", tmp_path / "seg.pth")
    assert len(loaded.classes) == 5 and torch.equal(loaded(torch.ones(3, 20, 20)), segmenter(torch.ones(3, 20, 20)))
    with pytest.raises(ModelUnavailableError, match="do not fit"):
        TorchvisionSegmenter("deeplabv3_resnet50", tmp_path / "seg.pth")
    with pytest.raises(ValueError, match="unknown torchvision detector 'yolo'"):
        TorchvisionDetector("yolo", "random")


def test_pretrained_weights_unavailable_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr("sapnet.hub.probe", lambda url: "offline (test)")
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        TorchvisionSegmenter("deeplabv3_resnet50")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "deeplabv3_resnet50_coco-cd0a2569.pth" in message and "--weights random" in message
    assert str(tmp_path) in message


# --------------------------------------------------------------------------------------------------------- CLI


def test_cli_detection_with_onnx_and_annotations(tmp_path: Path, capsys) -> None:
    root = _coco_set(tmp_path / "set")
    stub = _constant_yolox(tmp_path / "stub.onnx")
    code = main(
        ["evaluate", "--task", "detection", "--dataset", f"Tiny={root / 'images'}", "--annotations",
         str(root / "ann.json"), "--detector", str(stub), "--out", str(tmp_path / "out"), "--limit", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Detection on Tiny (2 images), YoloxOnnxDetector" in out
    assert "| mAP@.5 ↑ | 0.0000 | 0.0000 |" in out  # the stub sees persons where the set has dogs


def test_cli_segmentation_on_embedded_default(tmp_path: Path, capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the random-weights warning is printed once, not raised as a warning
        code = main(
            ["evaluate", "--task", "segmentation", "--segmenter", "lraspp_mobilenet_v3_large", "--weights", "random",
             "--out", str(tmp_path), "--grid-images", "1"]
        )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "embedded demo set" in captured.err and "RANDOM weights" in captured.err
    assert "Segmentation on demo (8 images)" in captured.out and "| mIoU ↑ |" in captured.out
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "table.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "{images}"], "--pseudo-gt"),
        (["--dataset", "{images}", "--annotations", "{missing}"], "does not exist"),
        (["--dataset", "{images}", "--pseudo-gt", "--detector", "yolo9"], "unknown torchvision detector"),
        (["--dataset", "{images}", "--pseudo-gt", "--rain", "drizzle"], "unknown rain preset"),
        (["--dataset", "a", "--dataset", "b"], "one dataset at a time"),
        (["--dataset", "{tmp}/nothing"], "nothing"),
    ],
)
def test_cli_setup_errors_exit_2(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    root = _coco_set(tmp_path / "set")
    fill = {"images": str(root / "images"), "missing": str(tmp_path / "none.json"), "tmp": str(tmp_path)}
    argv = ["evaluate", "--task", "detection", "--out", str(tmp_path / "out"), *(a.format(**fill) for a in args)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_exit_1_when_inputs_are_skipped(tmp_path: Path, capsys) -> None:
    root = _coco_set(tmp_path / "set")
    ann = json.loads((root / "ann.json").read_text())
    ann["annotations"].append({"image_id": 0, "category_id": 5, "bbox": [0, 0, 3, 3]})  # unknown category
    (root / "ann.json").write_text(json.dumps(ann))
    stub = _constant_yolox(tmp_path / "s.onnx")
    argv = ["evaluate", "--task", "detection", "--dataset", str(root / "images"), "--annotations",
            str(root / "ann.json"), "--detector", str(stub), "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "category ids not in its categories: 5 (1x)" in captured.err and "Problems:" in captured.out


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_cli_default_models_on_embedded_data_within_budget(tmp_path: Path, task: str) -> None:
    """The issue's budget: the CLI end to end on the embedded data with random-weight default models, < 5 min."""
    start = time.monotonic()
    assert main(["evaluate", "--task", task, "--weights", "random", "--out", str(tmp_path)]) in (0, 1)
    assert time.monotonic() - start < 300
    assert (tmp_path / "table.md").is_file()


def test_cli_restoration_still_needs_a_dataset(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--out", str(tmp_path)]) == 2
    assert "--dataset is required" in capsys.readouterr().err
