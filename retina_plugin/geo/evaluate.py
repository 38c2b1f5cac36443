"""
Detections of rasters scored against map features (tools/evaluate_raster.py): precision and
recall at IoU thresholds (the tree-crown benchmarks' measure) and COCO AP with each raster as
one image, both on the features' boxes in the raster's pixel coordinates, so that COCO's area
ranges (small < 32^2 pixels < medium < 96^2 pixels < large) mean what they mean for images.
A raster's boxes (`RasterTruth`) come from the two vector layers by geo.evaluate_layers.

Predictions and ground truth are matched within a class when both layers have a `label` column,
else class-agnostically. Matching is COCOeval's, one-to-one and greedy by score (read from its
per-image results by `retina_plugin.evaluation`), so that precision and recall count the same
pairs as the AP does; Hungarian matching (DeepForest) differs only where one detection overlaps
two features above the threshold. Rotated boxes (XYWHA) are matched by rotated IoU.
"""
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ..evaluation import COCO_IOU_THRESHOLDS, CocoEvaluation, DetectedBoxes, GroundTruthBoxes, evaluate_boxes

__all__ = ["RasterTruth", "coco_evaluation", "match_raster", "coco_ap", "evaluate_rasters", "format_table"]

AREA_RANGES = ("all", "small", "medium", "large")  # COCOeval's, for AP / APs / APm / APl


@dataclass
class RasterTruth:
    """One raster's ground truth and detections as pixel boxes (x0, y0, x1, y1) or XYWHA, labels as strings."""

    path: str
    width: int
    height: int
    crs: Optional[str]
    gt_boxes: np.ndarray  # (G, 4) or, rotated, (G, 5)
    gt_labels: np.ndarray  # (G,)
    det_boxes: np.ndarray  # (D, 4) or (D, 5)
    det_scores: np.ndarray  # (D,)
    det_labels: np.ndarray  # (D,)


def _coco_boxes(boxes: np.ndarray) -> np.ndarray:
    """COCOeval's boxes of RasterTruth boxes: XYWH of (N, 4) XYXY ones; (N, 5) XYWHA ones as they are."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim == 2 and boxes.shape[1] == 5:
        return boxes
    boxes = boxes.reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_evaluation(truths: Sequence[RasterTruth], class_names: Sequence[str], thresholds: Sequence[float] = ()):
    """
    COCOeval (bbox) of `truths`, each raster one image, at COCO's IoUs and `thresholds`, with
    maxDets N at least the most detections of a raster (COCOeval's default 100 would cut a
    raster's detections); N is never below COCO's 100, the figure the table reports.
    """
    category = {name: k for k, name in enumerate(class_names)}

    def rows(boxes, labels):  # (image index, class index, XYWH or XYWHA box) of every raster's boxes
        image = np.repeat(np.arange(len(truths)), [len(getattr(t, labels)) for t in truths])
        label = np.array([category[n] for t in truths for n in getattr(t, labels)], np.int64)
        return image, label, np.concatenate([_coco_boxes(getattr(t, boxes)) for t in truths])

    gt_image, gt_label, gt_boxes = rows("gt_boxes", "gt_labels")
    gt = GroundTruthBoxes(gt_image, gt_label, gt_boxes, np.zeros(len(gt_image), bool))
    scores = np.concatenate([t.det_scores for t in truths]).astype(np.float64)
    dets = DetectedBoxes(*rows("det_boxes", "det_labels"), scores)
    extra = [t for t in dict.fromkeys(float(t) for t in thresholds) if t not in COCO_IOU_THRESHOLDS]
    max_dets = max([100] + [len(t.det_boxes) for t in truths])
    return evaluate_boxes(gt, dets, len(truths), len(class_names), np.concatenate([COCO_IOU_THRESHOLDS, extra]),
                          max_dets, AREA_RANGES)  # fmt: skip


def match_raster(truth: RasterTruth, thresholds: Sequence[float], evaluation: Optional[CocoEvaluation] = None):
    """
    Per threshold: (det_tp (D,) bool, gt_matched (G,) bool), COCOeval's matches within a label
    (`evaluation`: `coco_evaluation([truth], ...)` at these thresholds, made here when not given).
    """
    if evaluation is None:
        labels = sorted({*truth.gt_labels, *truth.det_labels})
        evaluation = coco_evaluation([truth], labels, thresholds)
    return [(evaluation.matches(float(t)).det_tp, evaluation.matches(float(t)).gt_matched) for t in thresholds]


def _counts(det_tp, gt_matched) -> dict:
    tp, fp, fn = int(det_tp.sum()), int((~det_tp).sum()), int((~gt_matched).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall}


def coco_ap(
    truths: Sequence[RasterTruth], class_names: Sequence[str], evaluation: Optional[CocoEvaluation] = None
) -> dict:
    """
    pycocotools' bbox AP of `truths` (`evaluation`: their `coco_evaluation`, made here when not given).

    Returns: {"AP", "AP50", "AP75", "APs", "APm", "APl" (0..1, None where COCOeval has -1),
    "max_dets", "per_class": {name: AP or None}}.
    """
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    if not any(len(t.det_boxes) for t in truths):
        has_gt = {label for t in truths for label in t.gt_labels}
        return {**dict.fromkeys(keys, 0.0), "max_dets": 100,
                "per_class": {n: 0.0 if n in has_gt else None for n in class_names}}  # fmt: skip
    ev = evaluation if evaluation is not None else coco_evaluation(truths, class_names)
    # As COCOeval.summarize averages, at maxDets N (its stats[0] would take maxDets 100 whatever maxDets is).
    values = (ev.mean_ap(), ev.mean_ap([0.5]), ev.mean_ap([0.75]),
              ev.mean_ap(area="small"), ev.mean_ap(area="medium"), ev.mean_ap(area="large"))  # fmt: skip
    per_class = {name: None if math.isnan(ap) else float(ap) for name, ap in zip(class_names, ev.class_ap())}
    return {**dict(zip(keys, values)), "max_dets": ev.max_dets, "per_class": per_class}


def _summary(truths: Sequence[RasterTruth], matches, thresholds, class_names, evaluation: CocoEvaluation) -> dict:
    det_labels = np.concatenate([t.det_labels for t in truths])
    gt_labels = np.concatenate([t.gt_labels for t in truths])
    by_iou = {}
    for j, threshold in enumerate(thresholds):
        det_tp = np.concatenate([m[j][0] for m in matches])
        gt_matched = np.concatenate([m[j][1] for m in matches])
        counts = _counts(det_tp, gt_matched)
        if len(class_names) > 1:
            counts["per_class"] = {
                n: _counts(det_tp[det_labels == n], gt_matched[gt_labels == n]) for n in class_names
            }
        by_iou[f"{threshold:g}"] = counts
    return {"detections": len(det_labels), "ground_truth": len(gt_labels), "iou": by_iou,
            "coco": coco_ap(truths, class_names, evaluation)}  # fmt: skip


def evaluate_rasters(truths: Sequence[RasterTruth], thresholds: Sequence[float]):
    """
    Returns:
        (metrics, matches): metrics {"class_names", "rasters": [per raster: "raster", "width",
        "height", "crs", "detections", "ground_truth", "iou": {threshold: counts}, "coco"],
        "overall": the same over all rasters}; matches: per raster, `match_raster`'s list.
    """
    class_names = sorted({label for t in truths for label in [*t.gt_labels, *t.det_labels]})
    evaluations = [coco_evaluation([t], class_names, thresholds) for t in truths]
    matches = [match_raster(t, thresholds, ev) for t, ev in zip(truths, evaluations)]
    rasters = [
        {"raster": t.path, "width": t.width, "height": t.height, "crs": t.crs,
         **_summary([t], [m], thresholds, class_names, ev)}
        for t, m, ev in zip(truths, matches, evaluations)
    ]  # fmt: skip
    overall_evaluation = evaluations[0] if len(truths) == 1 else coco_evaluation(truths, class_names)
    overall = _summary(truths, matches, thresholds, class_names, overall_evaluation)
    return {"class_names": class_names, "rasters": rasters, "overall": overall}, matches


def _num(v, width=6) -> str:
    return f"{'-':>{width}}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>{width}.3f}"


def format_table(result: Dict) -> str:
    """Precision and recall per raster and IoU, COCO AP per raster, per-class AP with several classes."""
    rows = [(os.path.basename(r["raster"]), r) for r in result["rasters"]]
    if len(rows) > 1:
        rows.append(("overall", result["overall"]))
    width = max(6, *(len(name) for name, _ in rows))
    head = f"{'raster':<{width}}  {'IoU':>4}  {'TP':>6} {'FP':>6} {'FN':>6}  {'precision':>9} {'recall':>6}"
    lines = ["Precision and recall (one-to-one matching, greedy by score):", head, "-" * len(head)]
    for name, r in rows:
        for iou, c in r["iou"].items():
            lines.append(f"{name:<{width}}  {iou:>4}  {c['tp']:>6} {c['fp']:>6} {c['fn']:>6}  "
                         f"{_num(c['precision'], 9)} {_num(c['recall'])}")  # fmt: skip
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    head = f"{'raster':<{width}}  " + " ".join(f"{k:>6}" for k in keys) + f"  {'#det':>6} {'#gt':>6}"
    max_dets = result["overall"]["coco"]["max_dets"]
    lines += ["", f"COCO AP (boxes in raster pixels, maxDets 1/10/{max_dets}):", head, "-" * len(head)]
    for name, r in rows:
        values = " ".join(_num(r["coco"][k]) for k in keys)
        lines.append(f"{name:<{width}}  {values}  {r['detections']:>6} {r['ground_truth']:>6}")
    names = result["class_names"]
    if len(names) > 1:
        class_width = max(5, *(len(n) for n in names))
        head = f"{'class':<{class_width}}  " + " ".join(f"{name[:12]:>12}" for name, _ in rows)
        lines += ["", "COCO AP per class:", head, "-" * len(head)]
        for n in names:
            lines.append(f"{n:<{class_width}}  " + " ".join(_num(r["coco"]["per_class"][n], 12) for _, r in rows))
    return "\n".join(lines)
