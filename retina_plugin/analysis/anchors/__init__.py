"""
Anchor coverage (tools/analyze_anchors.py): do a config's anchors cover a dataset's boxes,
measured the way training labels anchors, and which anchor setting would cover them better?

A box is *covered* when its best anchor has IoU >= the foreground threshold, the lowest IoU the
Matcher labels 1 (from MODEL.RETINANET.IOU_THRESHOLDS and IOU_LABELS; 0.5 for [0.4, 0.5] and
[0, -1, 1]): only then does it get foreground anchors by IoU; otherwise it trains on its
low-quality matches alone (MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES) or not at all.

- `resized_boxes`: the dataset's boxes, resized as the config's DatasetMapper resizes them;
- `anchor_settings`: the anchor setting (MODEL.ANCHOR_GENERATOR) and the model's anchors for an image;
- `anchor_geometry`: a box against anchors on a grid, in closed form;
- `anchor_coverage`: the boxes matched to the anchors as training labels them;
- `coverage_statistics`: the per-box results and their summary (by COCO's size categories, per level);
- `anchor_search`: an anchor setting that covers more boxes;
- `coverage_report`: the whole analysis, as JSON and as text; `coverage_plot`: its picture;
- `data_settings`: the tiles, INPUT sizes and anchors proposed from the boxes' sizes (--propose-settings).
The tool's command line: `retina_plugin.cli.analyze_anchors`.
"""
from .anchor_coverage import match_boxes_to_anchors, measure_anchor_coverage
from .anchor_geometry import best_iou_on_grid
from .anchor_search import suggest_anchor_setting
from .anchor_settings import AnchorGrid, AnchorSetting
from .coverage_plot import plot_anchor_coverage
from .coverage_report import AnchorCoverageReport, analyze_anchor_coverage, format_anchor_coverage_report
from .coverage_statistics import SIZE_CATEGORIES, AnchorCoverage
from .resized_boxes import AnchorCoverageError, ResizedBoxes, load_resized_boxes

__all__ = [
    "SIZE_CATEGORIES",
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
