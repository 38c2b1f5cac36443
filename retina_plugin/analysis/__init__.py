"""
Dataset analyses for RetinaNetPlugin configs: do a config's anchors cover a dataset's boxes,
measured the way training labels anchors, and which anchor setting would cover them better?

A box is *covered* when its best anchor has IoU >= the foreground threshold, the lowest IoU the
Matcher labels 1 (from MODEL.RETINANET.IOU_THRESHOLDS and IOU_LABELS; 0.5 for [0.4, 0.5] and
[0, -1, 1]): only then does it get foreground anchors by IoU; otherwise it trains on its
low-quality matches alone (MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES) or not at all.

- `boxes`: the dataset's boxes, resized as the config's DatasetMapper resizes them;
- `anchors`: the anchor setting (MODEL.ANCHOR_GENERATOR) and the model's anchors for an image;
- `coverage`: the boxes matched to the anchors as training labels them;
- `statistics`: the per-box results and their summary (by COCO's size categories, per level);
- `search`: an anchor setting that covers more boxes;
- `report`: the whole analysis, as JSON and as text; `plot`: its picture;
- `cli`: tools/analyze_anchors.py.
"""
from .anchors import AnchorGrid, AnchorSetting, best_iou_on_grid
from .boxes import AnchorCoverageError, ResizedBoxes, load_resized_boxes
from .coverage import match_boxes_to_anchors, measure_anchor_coverage
from .plot import plot_anchor_coverage
from .report import AnchorCoverageReport, analyze_anchor_coverage, format_anchor_coverage_report
from .search import suggest_anchor_setting
from .statistics import SIZE_CATEGORIES, AnchorCoverage

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
