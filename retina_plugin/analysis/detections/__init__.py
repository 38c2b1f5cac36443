"""
Error analysis of a detector's COCO results on a dataset (tools/analyze_results.py): per-class
AP and F1-optimal score thresholds, precision-recall curves, a confusion matrix, the AP lost to
each TIDE error type, and the images with most errors. Works on any COCO results file. True
positives and AP are COCOeval's (`retina_plugin.evaluation`), with every detection kept.

- `detection_data`: the ground truth and the results file as arrays, and their COCOeval run;
- `class_thresholds`: the F1-optimal score threshold per class and its YAML file;
- `tide`: the TIDE error types and the AP each costs; `confusion`: the confusion matrix;
- `error_report`: the whole analysis, its table and files; `error_plots`: its figures;
- `worst_images`: the images with most errors, drawn. The tool: `retina_plugin.cli.analyze_results`.
"""
from .class_thresholds import best_f1, load_class_thresholds, write_class_thresholds
from .detection_data import (
    Detections,
    GroundTruth,
    detections_from_list,
    ground_truth_from_coco,
    load_detections,
)
from .error_report import ResultsAnalysis, analyse_results, format_table, write_tables
from .tide import ERROR_TYPES, classify_errors, error_summary, fixed_ap

__all__ = [
    "Detections", "GroundTruth", "detections_from_list", "ground_truth_from_coco", "load_detections",
    "ResultsAnalysis", "analyse_results", "format_table", "write_tables",
    "best_f1", "load_class_thresholds", "write_class_thresholds",
    "ERROR_TYPES", "classify_errors", "error_summary", "fixed_ap",
]  # fmt: skip
