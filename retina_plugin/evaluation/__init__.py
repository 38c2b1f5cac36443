"""
COCO evaluation of boxes held in memory: pycocotools' COCOeval run on flat numpy arrays, its
per-detection matches read back from `evalImgs` and its precision arrays from `accumulate()`.
The error analysis (`retina_plugin.analysis.detections`) and the raster evaluation
(`retina_plugin.geo.evaluate`) both count true positives and AP here, so they agree with
COCOeval by construction. This package imports nothing else of retina_plugin.
"""
from .coco_matching import (
    COCO_IOU_THRESHOLDS,
    CocoEvaluation,
    DetectedBoxes,
    GroundTruthBoxes,
    Matches,
    box_iou,
    evaluate_boxes,
    max_detections_per_image,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "CocoEvaluation",
    "DetectedBoxes",
    "GroundTruthBoxes",
    "Matches",
    "box_iou",
    "evaluate_boxes",
    "max_detections_per_image",
]
