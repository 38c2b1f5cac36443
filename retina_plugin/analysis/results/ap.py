"""
Precision-recall curves and AP as COCOeval.accumulate computes them (101 recall points,
precision made monotone), and the score threshold of the best F1 on a curve.
"""
from typing import Optional

import numpy as np

__all__ = ["RECALL_POINTS", "ranked", "interpolated_precision", "average_precision", "best_f1"]

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def ranked(scores: np.ndarray, tps: np.ndarray, order: Optional[np.ndarray] = None):
    """(scores, tps) sorted by score, descending; ties in `order` (default: as given), as COCOeval's mergesort."""
    order = np.arange(len(scores)) if order is None else order
    idx = np.lexsort((order, -scores))
    return scores[idx], tps[idx].astype(bool)


def _curve(tps: np.ndarray, num_gt: int):
    tp = np.cumsum(tps, dtype=np.float64)
    fp = np.cumsum(~tps, dtype=np.float64)
    return tp / (tp + fp + np.spacing(1)), tp / num_gt


def interpolated_precision(tps: np.ndarray, num_gt: int) -> np.ndarray:
    """(101,) precision at RECALL_POINTS of ranked detections (`tps` in score order); zeros past the last recall."""
    q = np.zeros(len(RECALL_POINTS))
    if num_gt == 0 or len(tps) == 0:
        return q
    precision, recall = _curve(tps, num_gt)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    inds = np.searchsorted(recall, RECALL_POINTS, side="left")
    valid = inds < len(precision)
    q[valid] = precision[inds[valid]]
    return q


def average_precision(tps: np.ndarray, num_gt: int) -> float:
    """COCO AP (0..1) of ranked detections; NaN without ground truth (COCOeval's -1)."""
    if num_gt == 0:
        return float("nan")
    return float(interpolated_precision(tps, num_gt).mean())


def best_f1(scores: np.ndarray, tps: np.ndarray, num_gt: int):
    """
    (threshold, precision, recall, f1) at the rank of ranked detections with the best F1,
    the threshold being that detection's score (keep scores >= it). Without a true positive:
    threshold 1.0, precision, recall and F1 0.
    """
    if num_gt == 0 or not np.any(tps):
        return 1.0, 0.0, 0.0, 0.0
    precision, recall = _curve(tps, num_gt)
    f1 = 2 * precision * recall / np.maximum(precision + recall, np.spacing(1))
    # Among tied scores only the last rank of the tie is reachable by a threshold.
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    f1 = np.where(last_of_tie, f1, -1.0)
    i = int(np.argmax(f1))
    return float(scores[i]), float(precision[i]), float(recall[i]), float(f1[i])
