"""Downstream benchmark: does deraining help object detection and semantic segmentation?

A detector (COCO mAP@[.5:.95], mAP@.5) or a segmenter (mIoU, mPA) is run on the rainy, derained and clean versions
of the same images, against annotations or, without them, against its own predictions on the clean images
(pseudo ground truth). See :func:`evaluate_downstream` and ``sapnet evaluate --task detection|segmentation``.
"""

from sapnet.downstream.data import AnnotationError, DownstreamItem, DownstreamSet, load_coco, load_downstream_set
from sapnet.downstream.draw import draw_boxes, draw_labels
from sapnet.downstream.metrics import (
    DetectionMAP,
    SegmentationScores,
    coco_map,
    confusion_matrix,
    segmentation_scores,
    segmentation_scores_from_confusion,
)
from sapnet.downstream.models import (
    COCO_CATEGORIES,
    DEFAULT_DETECTOR,
    DEFAULT_SEGMENTER,
    Detector,
    ModelUnavailableError,
    RandomModelWarning,
    Segmenter,
    TorchvisionDetector,
    TorchvisionSegmenter,
    YoloxOnnxDetector,
    create_detector,
    create_segmenter,
)
from sapnet.downstream.runner import DownstreamResult, evaluate_downstream, markdown_table
from sapnet.downstream.targets import (
    CLASS_MAPS,
    IGNORE_INDEX,
    BoxTargets,
    ClassMap,
    Detections,
    MaskError,
    load_class_map,
    read_mask,
)

__all__ = [
    "CLASS_MAPS",
    "COCO_CATEGORIES",
    "DEFAULT_DETECTOR",
    "DEFAULT_SEGMENTER",
    "IGNORE_INDEX",
    "AnnotationError",
    "BoxTargets",
    "ClassMap",
    "DetectionMAP",
    "Detections",
    "Detector",
    "DownstreamItem",
    "DownstreamResult",
    "DownstreamSet",
    "MaskError",
    "ModelUnavailableError",
    "RandomModelWarning",
    "SegmentationScores",
    "Segmenter",
    "TorchvisionDetector",
    "TorchvisionSegmenter",
    "YoloxOnnxDetector",
    "coco_map",
    "confusion_matrix",
    "create_detector",
    "create_segmenter",
    "draw_boxes",
    "draw_labels",
    "evaluate_downstream",
    "load_class_map",
    "load_coco",
    "load_downstream_set",
    "markdown_table",
    "read_mask",
    "segmentation_scores",
    "segmentation_scores_from_confusion",
]
