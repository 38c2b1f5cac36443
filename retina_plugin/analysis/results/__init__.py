"""
Error analysis of a detector's COCO results on a dataset (tools/analyze_results.py): per-class
AP and F1-optimal score thresholds, precision-recall curves, a confusion matrix, the AP lost to
each TIDE error type, and the images with most errors. Works on any COCO results file.
"""
from .data import Detections, GroundTruth, ResultsError, detections_from_list, ground_truth_from_coco, load_detections
from .report import ResultsAnalysis, analyse_results, format_table, write_tables
from .thresholds import ThresholdFileError, load_class_thresholds, write_class_thresholds
from .tide import ERROR_TYPES, classify_errors, error_summary, fixed_ap

__all__ = [
    "Detections", "GroundTruth", "ResultsError", "detections_from_list", "ground_truth_from_coco", "load_detections",
    "ResultsAnalysis", "analyse_results", "format_table", "write_tables",
    "ThresholdFileError", "load_class_thresholds", "write_class_thresholds",
    "ERROR_TYPES", "classify_errors", "error_summary", "fixed_ap",
]  # fmt: skip
