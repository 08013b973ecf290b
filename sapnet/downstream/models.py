"""Downstream models: object detectors and semantic segmenters that score rainy / derained / clean images.

Every model takes one RGB image, a float tensor (3, H, W) in [0, 1], and returns its prediction at the image's
own resolution:

* a detector returns :class:`~sapnet.downstream.targets.Detections` with COCO category ids;
* a segmenter returns an int64 (H, W) map of class ids.

Built by name with :func:`create_detector` / :func:`create_segmenter`:

* torchvision detectors and segmenters by their torchvision name (default ``fasterrcnn_resnet50_fpn_v2`` and
  ``deeplabv3_resnet50``). ``weights="pretrained"`` reads torchvision's published weights from the torch hub
  cache (downloaded there when the machine is online); a path loads a local state-dict file strictly;
  ``"random"`` initialises them from a seed, for testing the plumbing only (a warning says so);
* a YOLOX detector exported to ONNX (a ``*.onnx`` path), run with onnxruntime: letterbox to the model's input
  size (pad value 114), BGR in [0, 255], grid / stride decoding (strides 8, 16, 32), score = objectness x class
  probability, class-wise NMS.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from sapnet.deploy.runtime import create_session, import_onnxruntime
from sapnet.downstream.targets import Detections
from sapnet.hub import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomWeightsWarning,
    WeightsUnavailableError,
    load_state_dict_file,
    load_strict,
    offline_hint,
    seeded,
    torchvision_checkpoint,
)

__all__ = [
    "COCO_CATEGORIES",
    "DEFAULT_DETECTOR",
    "DEFAULT_SEGMENTER",
    "Detector",
    "ModelUnavailableError",
    "RandomModelWarning",
    "Segmenter",
    "TorchvisionDetector",
    "TorchvisionSegmenter",
    "YoloxOnnxDetector",
    "create_detector",
    "create_segmenter",
]

DEFAULT_DETECTOR = "fasterrcnn_resnet50_fpn_v2"
DEFAULT_SEGMENTER = "deeplabv3_resnet50"

Weights = Literal["pretrained", "random"] | str | os.PathLike[str]


def _coco_categories() -> dict[int, str]:
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights

    names = FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT.meta["categories"]
    return {i: name for i, name in enumerate(names) if name not in ("__background__", "N/A")}


COCO_CATEGORIES: dict[int, str] = _coco_categories()
"""The 80 COCO object categories: category id (1..90, with gaps) -> name."""

ModelUnavailableError = WeightsUnavailableError
"""A downstream model's weights are missing or do not fit, or the model file is not what it should be: the
package's one :class:`sapnet.hub.WeightsUnavailableError`, under the name the downstream benchmark documents."""

RandomModelWarning = RandomWeightsWarning
"""A downstream model runs with random weights (its scores test the plumbing, they measure nothing):
:class:`sapnet.hub.RandomWeightsWarning`."""


@runtime_checkable
class Detector(Protocol):
    """Detects objects: ``detector(image (3, H, W) float in [0, 1]) -> Detections`` (COCO category ids)."""

    name: str

    @property
    def categories(self) -> Mapping[int, str]:
        """COCO category id -> name."""
        ...

    def __call__(self, image: torch.Tensor) -> Detections: ...


@runtime_checkable
class Segmenter(Protocol):
    """Labels pixels: ``segmenter(image (3, H, W) float in [0, 1]) -> int64 (H, W)`` class ids."""

    name: str
    classes: tuple[str, ...]

    def __call__(self, image: torch.Tensor) -> torch.Tensor: ...


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected a float RGB image (3, H, W) in [0, 1], got {shape}")


# ------------------------------------------------------------------------------------------------ torchvision


def _weights_enum(name: str, kind: str) -> Any:  # a torchvision WeightsEnum member (untyped)
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm.detection if kind == "detector" else tvm.segmentation)
    if name not in available:
        raise ValueError(f"unknown torchvision {kind} {name!r}; choose one of {', '.join(available)}")
    return tvm.get_model_weights(name).DEFAULT


_HINT = offline_hint("--weights FILE", "--weights random", "to test the plumbing only: the scores then measure nothing")


def _build_torchvision(
    name: str, kind: str, weights: Weights, seed: int, num_classes: int | None
) -> tuple[nn.Module, list[str], str]:
    """(network in eval mode, class names, description of the weights)."""
    import torchvision.models as tvm

    enum = _weights_enum(name, kind)
    names: list[str] = list(enum.meta["categories"])
    state: dict[str, torch.Tensor] | None = None
    if weights == "random":
        source = f"random (seed {seed})"
        warnings.warn(
            f"{kind} {name} has random weights (seed {seed}): its scores test the plumbing and measure nothing",
            RandomWeightsWarning,
            stacklevel=3,
        )
    else:
        if weights == "pretrained":
            path = torchvision_checkpoint(enum.url, f"the {kind} {name}", _HINT)
            source = f"torchvision {enum}"
        else:
            path = Path(weights)
            source = f"file {path}"
        try:
            state = load_state_dict_file(path)
        except WeightsUnavailableError as e:
            raise WeightsUnavailableError(f"{kind} {name}: {e}") from None
        if num_classes is None:
            num_classes = _classes_in_state(state)
    if num_classes is not None and num_classes != len(names):
        names = [f"class {i}" for i in range(num_classes)]
    kwargs: dict[str, object] = {"num_classes": len(names)}
    if kind == "segmenter":
        kwargs["aux_loss"] = state is not None and any(k.startswith("aux_classifier.") for k in state)
    with seeded(seed):
        model = tvm.get_model(name, weights=None, weights_backbone=None, **kwargs)
    if state is not None:
        load_strict(model, state, f"the {kind} {name} ({source})")
    return model.eval().requires_grad_(False), names, source


# The last layer of each torchvision family, whose output count is the number of classes.
_CLASSIFIER_KEYS = (
    "roi_heads.box_predictor.cls_score.weight",  # Faster / Mask R-CNN
    "classifier.4.weight",  # DeepLabV3, FCN
    "classifier.low_classifier.weight",  # LR-ASPP
)


def _classes_in_state(state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count a state dict was trained for, when its classifier is one of :data:`_CLASSIFIER_KEYS`."""
    for key in _CLASSIFIER_KEYS:
        if key in state:
            return int(state[key].shape[0])
    return None


class TorchvisionDetector:
    """A torchvision detector (Faster R-CNN, RetinaNet, FCOS, SSD, ...) as a :class:`Detector`.

    Args:
        name: torchvision model name, e.g. ``"fasterrcnn_resnet50_fpn_v2"``.
        weights: ``"pretrained"`` (torchvision's COCO weights from the torch hub cache, downloaded when online),
            a state-dict file, or ``"random"`` (plumbing tests only; warns).
        score_threshold: detections below it are dropped (the model applies its own minimum too, 0.05 for the
            R-CNNs).
        device: where the network runs.
        seed: initialisation seed of random weights.
        num_classes: classes of a state-dict file (default: read from the file, else COCO's 91).

    Raises:
        ValueError: unknown name. ModelUnavailableError: weights missing or not fitting the network.
    """

    def __init__(
        self,
        name: str = DEFAULT_DETECTOR,
        weights: Weights = "pretrained",
        score_threshold: float = 0.01,
        device: torch.device | str | None = None,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        self.name = name
        self.model, names, self.weights = _build_torchvision(name, "detector", weights, seed, num_classes)
        self.categories = {i: n for i, n in enumerate(names) if n not in ("__background__", "N/A")}
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.score_threshold = score_threshold

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> Detections:
        _check_image(image)
        out = self.model([image.to(self.device, torch.float32)])[0]
        return Detections(out["boxes"], out["scores"], out["labels"]).above(self.score_threshold)

    def __repr__(self) -> str:
        return f"TorchvisionDetector({self.name!r}, weights={self.weights!r})"


class TorchvisionSegmenter:
    """A torchvision segmenter (DeepLabV3, FCN, LR-ASPP) as a :class:`Segmenter`.

    The image is normalised with the ImageNet mean / std and segmented at its own resolution.

    Args:
        name: torchvision model name, e.g. ``"deeplabv3_resnet50"``.
        weights: ``"pretrained"`` (torchvision's 21 VOC-class weights, from the torch hub cache), a state-dict
            file (its class count is read from the classifier), or ``"random"`` (plumbing tests only; warns).
        device: where the network runs.
        seed: initialisation seed of random weights.
        num_classes: classes of random weights (default: the 21 VOC classes).
    """

    def __init__(
        self,
        name: str = DEFAULT_SEGMENTER,
        weights: Weights = "pretrained",
        device: torch.device | str | None = None,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        self.name = name
        self.model, names, self.weights = _build_torchvision(name, "segmenter", weights, seed, num_classes)
        self.classes = tuple("background" if n == "__background__" else n for n in names)
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device)[:, None, None]
        self._std = torch.tensor(IMAGENET_STD, device=self.device)[:, None, None]

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _check_image(image)
        x = (image.to(self.device, torch.float32) - self._mean) / self._std
        return self.model(x[None])["out"][0].argmax(0).cpu()

    def __repr__(self) -> str:
        return f"TorchvisionSegmenter({self.name!r}, weights={self.weights!r})"


# ------------------------------------------------------------------------------------------------- YOLOX ONNX


class YoloxOnnxDetector:
    """A COCO YOLOX model exported to ONNX without its decoding step (output (1, A, 85)), run by onnxruntime.

    Pre-processing as YOLOX's evaluation: the image is resized (bilinear) to fit the input square keeping its
    aspect ratio, placed top-left on a canvas of value 114, fed as BGR in [0, 255] without normalisation.
    Decoding: for each stride s in (8, 16, 32) and grid cell (x, y), ``centre = ((x, y) + offset) * s``,
    ``size = exp(log_size) * s``; score = objectness x best class probability (both already sigmoid-ed in the
    export); detections above ``score_threshold`` go through class-wise NMS (IoU ``nms_threshold``).

    Args:
        path: the ``.onnx`` file.
        score_threshold: minimum score (0.01 as YOLOX's COCO evaluation).
        nms_threshold: NMS IoU (0.65 as YOLOX's COCO evaluation).
        threads: onnxruntime intra-op threads (default: torch's setting).

    Raises:
        ModelUnavailableError: missing file, onnxruntime not installed, or a model whose input / output is not
            that of an 80-class YOLOX export.
    """

    STRIDES = (8, 16, 32)

    def __init__(
        self,
        path: str | os.PathLike[str],
        score_threshold: float = 0.01,
        nms_threshold: float = 0.65,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.categories = COCO_CATEGORIES
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        if not self.path.is_file():
            raise WeightsUnavailableError(f"ONNX detector {self.path} does not exist")
        try:
            import_onnxruntime("ONNX detectors", extra="downstream")
        except ImportError as e:
            raise WeightsUnavailableError(str(e)) from e
        try:
            self.session = create_session(self.path, threads=threads)
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            raise WeightsUnavailableError(f"{self.path} is not a loadable ONNX model: {e}") from None
        (inp,), outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(s, int) for s in shape[2:]):
            raise WeightsUnavailableError(f"{self.path}: input {inp.name} has shape {shape}, expected (1, 3, H, W)")
        self.input_name = inp.name
        self.input_size = (int(shape[2]), int(shape[3]))
        anchors = sum(math.ceil(self.input_size[0] / s) * math.ceil(self.input_size[1] / s) for s in self.STRIDES)
        out_shape = list(outputs[0].shape)
        if len(out_shape) != 3 or out_shape[1:] != [anchors, 5 + len(COCO_CATEGORIES)]:
            raise WeightsUnavailableError(
                f"{self.path}: output shape {out_shape} is not that of an undecoded 80-class YOLOX export "
                f"(1, {anchors}, 85) for input {self.input_size}"
            )
        self._grid, self._stride = self._make_grid()
        self._label_ids = torch.tensor(list(COCO_CATEGORIES))

    def _make_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        grids, strides = [], []
        for s in self.STRIDES:
            h, w = math.ceil(self.input_size[0] / s), math.ceil(self.input_size[1] / s)
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            grids.append(torch.stack([xx, yy], -1).reshape(-1, 2))
            strides.append(torch.full((h * w, 1), s))
        return torch.cat(grids).float(), torch.cat(strides).float()

    def preprocess(self, image: torch.Tensor) -> tuple[np.ndarray, float]:
        """(network input (1, 3, S, S) float32 BGR in [0, 255], scale from image to input pixels)."""
        _check_image(image)
        h, w = image.shape[-2:]
        r = min(self.input_size[0] / h, self.input_size[1] / w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        x = image.detach().float().cpu().clamp(0, 1) * 255
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0].round()
        canvas = torch.full((3, *self.input_size), 114.0)
        canvas[:, :nh, :nw] = x.flip(0)  # RGB -> BGR
        return canvas[None].numpy(), r

    def decode(self, raw: torch.Tensor, scale: float, image_size: tuple[int, int]) -> Detections:
        """Raw output (A, 85) -> detections in image pixels."""
        centre = (raw[:, :2] + self._grid) * self._stride
        size = raw[:, 2:4].exp() * self._stride
        cls_prob, cls = raw[:, 5:].max(1)
        scores = raw[:, 4] * cls_prob
        keep = scores >= self.score_threshold
        centre, size, scores, cls = centre[keep], size[keep], scores[keep], cls[keep]
        boxes = torch.cat([centre - size / 2, centre + size / 2], 1) / scale
        h, w = image_size
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        kept = batched_nms(boxes, scores, cls, self.nms_threshold)
        return Detections(boxes[kept], scores[kept], self._label_ids[cls[kept]])

    def __call__(self, image: torch.Tensor) -> Detections:
        x, scale = self.preprocess(image)
        (raw,) = self.session.run(None, {self.input_name: x})
        h, w = image.shape[-2:]
        return self.decode(torch.from_numpy(raw[0]).float(), scale, (int(h), int(w)))

    def __repr__(self) -> str:
        return f"YoloxOnnxDetector({str(self.path)!r})"


# ---------------------------------------------------------------------------------------------------- factory


def create_detector(
    name: str | os.PathLike[str] = DEFAULT_DETECTOR,
    weights: Weights = "pretrained",
    *,
    score_threshold: float = 0.01,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> Detector:
    """A detector by torchvision name, or a YOLOX ``*.onnx`` file (``weights`` then does not apply)."""
    if str(name).endswith(".onnx"):
        return YoloxOnnxDetector(name, score_threshold=score_threshold)
    return TorchvisionDetector(str(name), weights, score_threshold, device, seed)


def create_segmenter(
    name: str = DEFAULT_SEGMENTER,
    weights: Weights = "pretrained",
    *,
    device: torch.device | str | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> Segmenter:
    """A segmenter by torchvision name."""
    return TorchvisionSegmenter(name, weights, device, seed, num_classes)
