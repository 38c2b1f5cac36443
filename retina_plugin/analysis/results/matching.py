"""
COCOeval's matching, per image and class: detections in score order each take the unmatched
ground-truth box of their class with the highest IoU >= t (pycocotools' IoU; a crowd box can
take any number of detections, which are then ignored: neither true nor false positives).
"""
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .data import Detections, GroundTruth, image_slices

__all__ = ["Matches", "box_iou", "image_ious", "match_boxes", "match_detections"]


@dataclass
class Matches:
    """At one IoU threshold: the ground-truth row each detection matched (-1: none)."""

    iou: float
    det_gt: np.ndarray  # (D,) flat ground-truth index or -1
    det_ignored: np.ndarray  # (D,) matched a crowd box
    gt_matched: np.ndarray  # (G,) a non-crowd box a detection matched

    @property
    def det_tp(self) -> np.ndarray:
        return (self.det_gt >= 0) & ~self.det_ignored


def box_iou(det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU of XYWH boxes, by pycocotools (for a crowd box: intersection / detection area)."""
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros((len(det_boxes), len(gt_boxes)))
    ious = mask_utils.iou(det_boxes.tolist(), gt_boxes.tolist(), [int(c) for c in gt_crowd])
    return np.asarray(ious, dtype=np.float64).reshape(len(det_boxes), len(gt_boxes))


def image_ious(gt: GroundTruth, dets: Detections) -> List[np.ndarray]:
    """Per image: the (D_i, G_i) IoU of its detections (rows) with its ground truth (columns), any class."""
    num = len(gt.image_ids)
    g, d = image_slices(gt.image, num), image_slices(dets.image, num)
    return [
        box_iou(dets.boxes[d[i] : d[i + 1]], gt.boxes[g[i] : g[i + 1]], gt.crowd[g[i] : g[i + 1]]) for i in range(num)
    ]


def match_boxes(ious: np.ndarray, crowd: np.ndarray, threshold: float):
    """
    COCOeval.evaluateImg's matching of one image and class: `ious` (D, G) with the detections
    in score order. Returns (det_gt (D,) column or -1, det_ignored (D,)).
    """
    num_det, num_gt = ious.shape
    det_gt = np.full(num_det, -1, np.int64)
    ignored = np.zeros(num_det, bool)
    gt_order = np.argsort(crowd, kind="mergesort")  # non-crowd first
    taken = np.zeros(num_gt, bool)
    for d in range(num_det):
        best, m = min(threshold, 1 - 1e-10), -1
        for g in gt_order:
            if taken[g] and not crowd[g]:
                continue
            if m > -1 and not crowd[m] and crowd[g]:
                break
            if ious[d, g] < best:
                continue
            best, m = ious[d, g], g
        if m > -1:
            det_gt[d], ignored[d], taken[m] = m, crowd[m], True
    return det_gt, ignored


def match_detections(gt: GroundTruth, dets: Detections, ious: List[np.ndarray], thresholds: Sequence[float]):
    """[Matches] of the whole dataset, one per IoU threshold (`ious` from `image_ious`)."""
    num = len(gt.image_ids)
    g, d = image_slices(gt.image, num), image_slices(dets.image, num)
    out = [
        Matches(t, np.full(len(dets), -1, np.int64), np.zeros(len(dets), bool), np.zeros(len(gt.cls), bool))
        for t in thresholds
    ]
    for i in range(num):
        if d[i] == d[i + 1] or g[i] == g[i + 1]:
            continue
        det_cls, gt_cls, crowd = dets.cls[d[i] : d[i + 1]], gt.cls[g[i] : g[i + 1]], gt.crowd[g[i] : g[i + 1]]
        for k in np.intersect1d(det_cls, gt_cls):
            rows, cols = np.flatnonzero(det_cls == k), np.flatnonzero(gt_cls == k)
            sub = ious[i][np.ix_(rows, cols)]
            for m in out:
                det_gt, ignored = match_boxes(sub, crowd[cols], m.iou)
                hit = det_gt >= 0
                flat = g[i] + cols[det_gt[hit]]
                m.det_gt[d[i] + rows[hit]] = flat
                m.det_ignored[d[i] + rows] = ignored
                m.gt_matched[flat[~ignored[hit]]] = True
    return out
