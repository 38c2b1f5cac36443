"""
Dataset analyses for RetinaNetPlugin configs. `anchor_coverage`: do a config's anchors cover
a dataset's boxes, and which anchor setting would cover them better?
"""
from .anchor_coverage import (
    AnchorCoverage,
    AnchorCoverageError,
    AnchorCoverageReport,
    AnchorGrid,
    AnchorSetting,
    ResizedBoxes,
    analyze_anchor_coverage,
    best_iou_on_grid,
    format_anchor_coverage_report,
    load_resized_boxes,
    match_boxes_to_anchors,
    measure_anchor_coverage,
    plot_anchor_coverage,
    suggest_anchor_setting,
)

__all__ = [
    "AnchorCoverage",
    "AnchorCoverageError",
    "AnchorCoverageReport",
    "AnchorGrid",
    "AnchorSetting",
    "ResizedBoxes",
    "analyze_anchor_coverage",
    "best_iou_on_grid",
    "format_anchor_coverage_report",
    "load_resized_boxes",
    "match_boxes_to_anchors",
    "measure_anchor_coverage",
    "plot_anchor_coverage",
    "suggest_anchor_setting",
]
