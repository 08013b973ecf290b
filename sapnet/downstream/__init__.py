"""Downstream benchmark: does deraining help object detection and semantic segmentation?

A detector (COCO mAP@[.5:.95], mAP@.5) or a segmenter (mIoU, mPA) is run on the rainy, derained and clean versions
of the same images, against annotations or, without them, against its own predictions on the clean images
(pseudo ground truth). See :func:`evaluate_downstream` (each task a :class:`DownstreamTask`, :data:`TASKS`) and
``sapnet evaluate --task detection|segmentation``. On rainy clips, :func:`evaluate_video_segmentation` scores a
segmenter on each temporal derain mode, with the segmentation's temporal stability (``sapnet evaluate --task
segmentation --clips DIR``).
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
from sapnet.downstream.runner import DownstreamResult, evaluate_downstream
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
from sapnet.downstream.tasks import TASKS, DetectionTask, DownstreamTask, SegmentationTask, create_task
from sapnet.downstream.video import (
    INSTABILITY,
    VIDEO_SEGMENTATION_METRICS,
    VideoSegmentationResult,
    evaluate_video_segmentation,
)

__all__ = [
    "CLASS_MAPS",
    "COCO_CATEGORIES",
    "DEFAULT_DETECTOR",
    "DEFAULT_SEGMENTER",
    "IGNORE_INDEX",
    "INSTABILITY",
    "TASKS",
    "VIDEO_SEGMENTATION_METRICS",
    "AnnotationError",
    "BoxTargets",
    "ClassMap",
    "DetectionMAP",
    "DetectionTask",
    "Detections",
    "Detector",
    "DownstreamItem",
    "DownstreamResult",
    "DownstreamSet",
    "DownstreamTask",
    "MaskError",
    "ModelUnavailableError",
    "RandomModelWarning",
    "SegmentationScores",
    "SegmentationTask",
    "Segmenter",
    "TorchvisionDetector",
    "TorchvisionSegmenter",
    "VideoSegmentationResult",
    "YoloxOnnxDetector",
    "coco_map",
    "confusion_matrix",
    "create_detector",
    "create_segmenter",
    "create_task",
    "draw_boxes",
    "draw_labels",
    "evaluate_downstream",
    "evaluate_video_segmentation",
    "load_class_map",
    "load_coco",
    "load_downstream_set",
    "read_mask",
    "segmentation_scores",
    "segmentation_scores_from_confusion",
]
