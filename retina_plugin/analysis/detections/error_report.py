"""
The analysis of one results file against a dataset's ground truth, its console table, and the
files it writes: per_class.csv, thresholds.yaml, confusion_matrix.csv, errors.json.
"""
import csv
import json
import math
import os
from dataclasses import dataclass
from typing import List

import numpy as np

from ...evaluation import COCO_IOU_THRESHOLDS, Matches
from .class_thresholds import best_f1, write_class_thresholds
from .confusion import confusion_matrix
from .detection_data import Detections, GroundTruth, evaluate, image_ious, same_box_kind
from .tide import Errors, classify_errors, error_summary

__all__ = ["ResultsAnalysis", "analyse_results", "format_table", "write_tables"]

CSV_COLUMNS = ("class", "AP", "AP50", "AP75", "precision", "recall", "f1", "threshold", "num_gt", "num_det")


@dataclass
class ResultsAnalysis:
    """Per class k: APs in percent (NaN without ground truth), the best-F1 point at `iou`, the curves."""

    gt: GroundTruth
    dets: Detections
    iou: float
    ap: np.ndarray  # (K,) AP at IoU .50:.95
    ap50: np.ndarray
    ap75: np.ndarray
    pr50: np.ndarray  # (K, 101) COCOeval's interpolated precision at RECALL_POINTS, IoU 0.5; 0 without ground truth
    pr75: np.ndarray
    threshold: np.ndarray  # (K,) best-F1 score threshold at `iou`
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    num_gt: np.ndarray
    num_det: np.ndarray
    matches: Matches  # at `iou`
    errors: Errors
    error_summary: dict
    confusion: np.ndarray  # (K + 1, K + 1)
    max_dets: int  # COCOeval's maxDets: the most detections of an image, so none is cut

    @property
    def class_names(self) -> List[str]:
        return self.gt.class_names

    def rows(self) -> list:
        """The per_class.csv rows: dicts of CSV_COLUMNS."""
        rows = []
        for k, name in enumerate(self.class_names):
            values = [round(float(v[k]), 4) for v in self._values()]
            rows.append(dict(zip(CSV_COLUMNS, [name, *values, int(self.num_gt[k]), int(self.num_det[k])])))
        return rows

    def _values(self):
        return (self.ap, self.ap50, self.ap75, self.precision, self.recall, self.f1, self.threshold)


def analyse_results(gt: GroundTruth, dets: Detections, iou: float = 0.5) -> ResultsAnalysis:
    """
    COCOeval at COCO's IoUs and `iou`; the APs, curves, best-F1 thresholds, confusion matrix and
    TIDE errors. Rotated (XYWHA) boxes on either side: all of it by rotated IoU (`same_box_kind`).
    """
    gt, dets = same_box_kind(gt, dets)
    iou = float(iou)
    extra = [] if iou in COCO_IOU_THRESHOLDS else [iou]
    ev = evaluate(gt, dets, np.concatenate([COCO_IOU_THRESHOLDS, extra]))
    matches = ev.matches(iou)
    num_gt = gt.num_gt()
    best = np.array([best_f1(*ev.ranked_detections(k, iou), num_gt[k]) for k in range(gt.num_classes)]).reshape(-1, 4)
    ious = image_ious(gt, dets)
    errors = classify_errors(gt, dets, ious, matches)

    def curves(at):  # (K, 101); a class without ground truth (COCOeval's -1) as zeros
        return np.maximum(ev.precision[ev.threshold_index(at), :, :, 0].T, 0.0)

    return ResultsAnalysis(
        gt=gt, dets=dets, iou=iou, ap=100 * ev.class_ap(), ap50=100 * ev.class_ap([0.5]),
        ap75=100 * ev.class_ap([0.75]), pr50=curves(0.5), pr75=curves(0.75),
        threshold=best[:, 0], precision=best[:, 1], recall=best[:, 2], f1=best[:, 3],
        num_gt=num_gt, num_det=np.bincount(dets.cls, minlength=gt.num_classes), matches=matches, errors=errors,
        error_summary=error_summary(gt, dets, matches, errors),
        confusion=confusion_matrix(gt, dets, ious, matches, best[:, 0]), max_dets=ev.max_dets,
    )  # fmt: skip


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def format_table(a: ResultsAnalysis) -> str:
    """The per-class table (AP in percent; precision, recall, F1 at the best-F1 threshold, IoU a.iou) and the errors."""
    width = max([5] + [len(n) for n in a.class_names])
    head = (
        f"{'class':<{width}}  {'AP':>5} {'AP50':>5} {'AP75':>5}  {'prec':>5} {'rec':>5} {'F1':>5} {'thresh':>6}"
        f"  {'#gt':>6} {'#det':>6}"
    )

    def num(v, digits=1, w=5):
        return f"{'-':>{w}}" if math.isnan(v) else f"{v:>{w}.{digits}f}"

    title = f"Per class (AP in %; precision, recall, F1 at the F1-optimal threshold, IoU {a.iou:g}):"
    lines = [title, head, "-" * len(head)]
    for k, name in enumerate(a.class_names):
        lines.append(
            f"{name:<{width}}  {num(a.ap[k])} {num(a.ap50[k])} {num(a.ap75[k])}  {num(a.precision[k], 3)} "
            f"{num(a.recall[k], 3)} {num(a.f1[k], 3)} {num(a.threshold[k], 3, 6)}  {a.num_gt[k]:>6} {a.num_det[k]:>6}"
        )
    lines.append("-" * len(head))
    means = f"{num(_mean(a.ap))} {num(_mean(a.ap50))} {num(_mean(a.ap75))}"
    lines.append(f"{'mean':<{width}}  {means}  {'':>30}{a.num_gt.sum():>6} {a.num_det.sum():>6}")
    s = a.error_summary
    ap_name = f"AP{round(100 * s['iou'])}"
    lines.append(f"\n{ap_name} {s['ap']:.1f}; {ap_name} lost to each TIDE error type (gained by fixing it; count):")
    lines += [f"  {name:<7}{e['delta_ap']:>6.2f}  ({e['count']})" for name, e in s["errors"].items()]
    return "\n".join(lines)


def write_tables(a: ResultsAnalysis, out_dir: str) -> List[str]:
    """Write per_class.csv, thresholds.yaml, confusion_matrix.csv and errors.json into `out_dir`; their paths."""
    names = ("per_class.csv", "thresholds.yaml", "confusion_matrix.csv", "errors.json")
    paths = [os.path.join(out_dir, n) for n in names]
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(a.rows())
    header = (
        f"Per-class score thresholds: the F1-optimal one at IoU {a.iou:g} (tools/analyze_results.py).\n"
        "A class without a true positive gets 1.0. Read by retina_plugin.analysis.detections.load_class_thresholds."
    )
    write_class_thresholds(paths[1], a.class_names, a.threshold, header)
    labels = list(a.class_names)
    with open(paths[2], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ground truth \\ predicted"] + labels + ["missed"])
        for name, row in zip(labels + ["background"], a.confusion):
            writer.writerow([name] + [int(v) for v in row])
    with open(paths[3], "w") as f:
        json.dump(a.error_summary, f, indent=2)
    return paths
