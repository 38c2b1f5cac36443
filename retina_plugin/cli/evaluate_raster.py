"""
tools/evaluate_raster.py: Score a raster's detections (a vector layer, as tools/predict_raster.py writes) against map
features such as tree crowns:

    python tools/evaluate_raster.py --predictions detections.gpkg --ground-truth crowns.gpkg \
        [--raster scene.tif ...] [--iou 0.4 0.5] [--score-threshold T] [--output-dir DIR]

Prints precision and recall at each IoU (one-to-one matching, greedy by score) and COCO AP
(AP, AP50, AP75, by area; per class when there are several labels) with each raster as one
image, per raster and overall. --raster defaults to the files of the predictions' `source`
column. Ground truth in another CRS is reprojected to the raster's. When the detections hold a
turned rectangle (a rotated model's), every polygon of both layers is scored as its minimum-area
rotated rectangle with rotated IoU, else as its axis-aligned pixel bounds. Writes
into --output-dir (default: the predictions' folder) evaluation.json and <raster>_evaluation.png
(true positives, false positives and misses at the first IoU). See docs/geospatial_evaluation.md. An error ends
with one line `evaluate_raster: error: ...` and exit status 2. The logic is in
retina_plugin.geo.evaluate_layers, evaluate and evaluate_plot.
"""
import json
import os

from ..config import ConfigError
from ..geo.evaluate import evaluate_rasters, format_table
from ..geo.evaluate_layers import check_label_sets, load_ground_truth, load_predictions, raster_paths, raster_truth
from ..geo.evaluate_plot import plot_evaluation
from ..geo.rotated_rectangles import has_turned_rectangles
from .arguments import OneLineParser, one_line_errors

PROG = "evaluate_raster"


def get_parser():
    parser = OneLineParser(prog=PROG, description="Precision, recall and COCO AP of raster detections vs map features")
    add = parser.add_argument
    add("--predictions", required=True, metavar="FILE", help="detection layer: polygons with a 'score' column")
    add("--ground-truth", required=True, metavar="FILE", help="ground-truth polygons (optional 'label' column)")
    add("--raster", nargs="+", metavar="FILE", help="the raster(s) detected on (default: the 'source' column's files)")
    add("--iou", nargs="+", type=float, default=[0.4, 0.5], help="IoU thresholds of a match (0.4 0.5)")
    add("--class-agnostic", action="store_true", help="match detections to ground truth whatever their labels")
    add("--score-threshold", type=float, default=0.0, metavar="T", help="keep detections scoring >= T (0)")
    add("--output-dir", metavar="DIR", help="where evaluation.json and the PNGs go (default: the predictions' folder)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with one_line_errors(PROG):
        for iou in args.iou:
            if not 0.0 < iou <= 1.0:
                raise ConfigError(f"--iou {iou:g}: must be in (0, 1]")
        thresholds = list(dict.fromkeys(args.iou))
        predictions, pred_label = load_predictions(args.predictions, args.score_threshold)
        ground_truth, gt_label = load_ground_truth(args.ground_truth)
        if args.class_agnostic:
            pred_label = gt_label = None
        check_label_sets(predictions, pred_label, args.predictions, ground_truth, gt_label, args.ground_truth)
        rasters = raster_paths(predictions, args.predictions, args.raster)
        split = len(rasters) > 1 and "source" in predictions.columns
        rotated = has_turned_rectangles(predictions.geometry.values)
        truths = [
            raster_truth(r, predictions, pred_label, args.predictions, ground_truth, gt_label, args.ground_truth, split,
                         rotated)  # fmt: skip
            for r in rasters
        ]
        metrics, matches = evaluate_rasters(truths, thresholds)
        output = args.output_dir or os.path.dirname(os.path.abspath(args.predictions))
        os.makedirs(output, exist_ok=True)
        matching = "within label" if pred_label and gt_label else "class-agnostic"
        boxes = "rotated" if rotated else "axis-aligned"
        metrics = {"predictions": args.predictions, "ground_truth": args.ground_truth,
                   "score_threshold": args.score_threshold, "matching": matching, "boxes": boxes, **metrics}  # fmt: skip
        json_path = os.path.join(output, "evaluation.json")
        with open(json_path, "w") as f:
            json.dump(metrics, f, indent=2)
        stems = [os.path.splitext(os.path.basename(t.path))[0] for t in truths]
        pngs = [
            plot_evaluation(t, *m[0], thresholds[0], os.path.join(output, f"{stem}_evaluation.png"))
            for t, m, stem in zip(truths, matches, stems)
        ]
    n_det, n_gt = metrics["overall"]["detections"], metrics["overall"]["ground_truth"]
    print(f"{args.predictions} ({n_det} detections, score >= {args.score_threshold:g}) against {args.ground_truth} "
          f"({n_gt} features), {matching}{', rotated boxes' if rotated else ''}, on {len(rasters)} raster(s)\n")  # fmt: skip
    print(format_table(metrics))
    print(f"\nWrote {os.path.basename(json_path)} and {', '.join(os.path.basename(p) for p in pngs)} into {output}")
