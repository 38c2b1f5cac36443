"""
COCO evaluation, one COCOeval for the whole package (`cocoeval_class`: faster-coco-eval's
compiled one when installed, else pycocotools'; for rotated boxes either with the rotated IoU):

- `FastCOCOEvaluator`: Detectron2's COCOEvaluator running it (trainer, LazyConfig, analysis,
  API, tiled evaluation);
- `evaluate_boxes`: it on flat numpy arrays, its per-detection matches and precision arrays read
  back. The error analysis (`retina_plugin.analysis.detections`) and the raster evaluation
  (`retina_plugin.geo.evaluate`) both count true positives and AP here, so they agree with
  COCOeval by construction. Rotated XYWHA boxes (5 columns) go through the same matching with
  rotated IoU (`box_iou`, `cocoeval_class(rotated=True)`);
- `RotatedCOCOEvaluator`: Detectron2's on that rotated COCOeval, its IoU from `retina_plugin.ops`
  (Detectron2's compiled op does not load here);
- `dota_map` / `DOTAEvaluator`: DOTA's mAP50 of rotated boxes (VOC07 11-point and area under the curve).

This package imports nothing else of retina_plugin but `retina_plugin.ops`.
"""
from .box_iou import as_rotated, is_rotated_boxes, rotated_box_iou
from .coco_evaluator import FastCOCOEvaluator, evaluate_coco_boxes
from .cocoeval import cocoeval_class, cocoeval_name, compiled_available
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
from .dota_evaluator import DOTAEvaluator, has_rotated_boxes
from .dota_map import DOTA_IOU_THRESHOLD, DOTAMeanAP, dota_map, match_detections
from .rotated_coco_evaluator import RotatedCOCOEvaluator
from .rotated_cocoeval import RotatedCOCOeval

__all__ = [
    "FastCOCOEvaluator",
    "evaluate_coco_boxes",
    "cocoeval_class",
    "cocoeval_name",
    "compiled_available",
    "COCO_IOU_THRESHOLDS",
    "CocoEvaluation",
    "DetectedBoxes",
    "GroundTruthBoxes",
    "Matches",
    "box_iou",
    "evaluate_boxes",
    "max_detections_per_image",
    "as_rotated",
    "is_rotated_boxes",
    "rotated_box_iou",
    "DOTAEvaluator",
    "has_rotated_boxes",
    "DOTA_IOU_THRESHOLD",
    "DOTAMeanAP",
    "dota_map",
    "match_detections",
    "RotatedCOCOEvaluator",
    "RotatedCOCOeval",
]
