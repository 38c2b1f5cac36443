"""
The confusion matrix of a detector at one IoU and per-class score thresholds: rows the
ground-truth classes plus "background" (false positives), columns the predicted classes plus
"missed". Each ground-truth row sums to that class's number of (non-crowd) boxes.
"""
from typing import List

import numpy as np

from ...evaluation import Matches
from .detection_data import Detections, GroundTruth, image_slices

__all__ = ["confusion_matrix"]


def confusion_matrix(
    gt: GroundTruth, dets: Detections, ious: List[np.ndarray], matches: Matches, thresholds: np.ndarray
) -> np.ndarray:
    """
    (K + 1, K + 1) counts of the detections scoring at least their class's threshold. First
    their true positives at `matches.iou` (COCO matching within a class: the diagonal); then
    each other detection, in score order, takes the unmatched box of any class with the highest
    IoU >= matches.iou (row: that box's class), else counts as background. Boxes left are
    "missed"; detections on crowd boxes are left out, as COCOeval ignores them.
    """
    k = gt.num_classes
    matrix = np.zeros((k + 1, k + 1), np.int64)
    kept = dets.scores >= np.asarray(thresholds, np.float64)[dets.cls]
    tp = matches.det_tp & kept
    np.add.at(matrix, (dets.cls[tp], dets.cls[tp]), 1)
    taken = gt.crowd.copy()
    taken[matches.det_gt[tp]] = True
    others = kept & ~tp & ~matches.det_ignored
    num = len(gt.image_ids)
    g, d = image_slices(gt.image, num), image_slices(dets.image, num)
    for i in range(num):
        for r in np.flatnonzero(others[d[i] : d[i + 1]]):
            row = ious[i][r].copy() if g[i + 1] > g[i] else np.zeros(0)
            row[taken[g[i] : g[i + 1]]] = -1.0
            j = int(np.argmax(row)) if len(row) else -1
            det_cls = dets.cls[d[i] + r]
            if j >= 0 and row[j] >= matches.iou:
                taken[g[i] + j] = True
                matrix[gt.cls[g[i] + j], det_cls] += 1
            else:
                matrix[k, det_cls] += 1
    missed = ~taken
    np.add.at(matrix, (gt.cls[missed], np.full(missed.sum(), k)), 1)
    return matrix
