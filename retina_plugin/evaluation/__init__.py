"""
COCO evaluation, one COCOeval for the whole package (`cocoeval_class`: faster-coco-eval's
compiled one when installed, else pycocotools'):

- `FastCOCOEvaluator`: Detectron2's COCOEvaluator running it (trainer, LazyConfig, analysis,
  API, tiled evaluation);
- `evaluate_boxes`: it on flat numpy arrays, its per-detection matches and precision arrays read
  back. The error analysis (`retina_plugin.analysis.detections`) and the raster evaluation
  (`retina_plugin.geo.evaluate`) both count true positives and AP here, so they agree with
  COCOeval by construction.

This package imports nothing else of retina_plugin.
"""
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
]
