"""
DOTA's mAP of oriented detections (task 1): the DOTA devkit's `voc_eval`
(dota_evaluation_task1.py) and MMRotate's `eval_rbbox_map`, on boxes held in arrays.

Per class, the detections of all images go down in score order. A detection takes the
ground-truth box of its image and class with the highest rotated IoU, matched or not; when
that IoU exceeds the threshold (0.5) it is a true positive if the box is still unmatched, a
false positive if a higher-scoring detection matched it, and neither if the box is difficult
(a difficult box takes any number of detections and counts in no recall). Every other
detection is a false positive. This is the devkit's rule, not COCOeval's: a detection whose
best box is taken does not fall back to the next one. Precision and recall give the AP twice,
by Detectron2's `voc_ap` (the devkit's function): VOC07's 11-point mean (the figure DOTA's
server and MMRotate report as mAP) and the area under the precision envelope (VOC2010+). A
class without a non-difficult box has no AP (NaN) and stays out of the mean over classes, as
in MMRotate (the devkit would divide by zero). The IoU is exact (`box_iou`, retina_plugin.ops).
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from detectron2.evaluation.pascal_voc_evaluation import voc_ap

from .box_iou import as_rotated, box_iou
from .coco_matching import DetectedBoxes, GroundTruthBoxes

__all__ = ["DOTA_IOU_THRESHOLD", "DOTAMeanAP", "match_detections", "dota_map"]

DOTA_IOU_THRESHOLD = 0.5


@dataclass
class DOTAMeanAP:
    """Per class k of K: the two APs (0..1, NaN without ground truth), the counts and the curve."""

    iou_threshold: float
    ap_voc07: np.ndarray  # (K,) VOC07 11-point AP
    ap_auc: np.ndarray  # (K,) area under the precision envelope
    num_gt: np.ndarray  # (K,) non-difficult ground-truth boxes
    num_det: np.ndarray  # (K,) detections (those on difficult boxes included)
    recall: Tuple[np.ndarray, ...]  # per class (N_k,): after each counted detection in score order
    precision: Tuple[np.ndarray, ...]

    @property
    def map_voc07(self) -> float:
        """The mean 11-point AP over the classes with ground truth (NaN when none has)."""
        return _mean(self.ap_voc07)

    @property
    def map_auc(self) -> float:
        """The mean area-under-curve AP over the classes with ground truth (NaN when none has)."""
        return _mean(self.ap_auc)


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _match_group(det_boxes: np.ndarray, gt_boxes: np.ndarray, difficult: np.ndarray, iou_threshold: float):
    """(tp, fp) (n,) bool of one image and class: det_boxes (n, 5) in score order, gt_boxes (g, 5)."""
    tp, fp = np.zeros(len(det_boxes), bool), np.zeros(len(det_boxes), bool)
    if len(gt_boxes) == 0:
        fp[:] = True
        return tp, fp
    ious = box_iou(det_boxes, gt_boxes, np.zeros(len(gt_boxes), bool))
    best, best_iou = ious.argmax(axis=1), ious.max(axis=1)
    matched = np.zeros(len(gt_boxes), bool)
    for r, (j, iou) in enumerate(zip(best, best_iou)):
        if iou <= iou_threshold:  # the devkit's `ovmax > ovthresh` for a match
            fp[r] = True
        elif difficult[j]:
            continue
        elif matched[j]:
            fp[r] = True
        else:
            tp[r] = matched[j] = True
    return tp, fp


def match_detections(gt: GroundTruthBoxes, dets: DetectedBoxes, iou_threshold: float = DOTA_IOU_THRESHOLD):
    """
    (tp (D,) bool, fp (D,) bool) of the detections `dets` against `gt` (its `crowd` holds DOTA's
    difficult flag), by the rule of the module's docstring; boxes (N, 5) XYWHA or (N, 4) XYWH.
    A detection on a difficult box is neither.
    """
    gt_boxes, det_boxes = as_rotated(gt.boxes), as_rotated(dets.boxes)
    num_keys = int(max(np.max(gt.label, initial=-1), np.max(dets.label, initial=-1))) + 1
    gt_key = np.asarray(gt.image, np.int64) * num_keys + np.asarray(gt.label, np.int64)
    det_key = np.asarray(dets.image, np.int64) * num_keys + np.asarray(dets.label, np.int64)
    scores = np.asarray(dets.scores, np.float64)
    det_order = np.lexsort((np.arange(len(scores)), -scores, det_key))  # by image and class, then score
    gt_order = np.argsort(gt_key, kind="stable")
    tp, fp = np.zeros(len(scores), bool), np.zeros(len(scores), bool)
    if len(scores) == 0:
        return tp, fp
    sorted_keys = det_key[det_order]
    for rows in np.split(det_order, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1):
        lo, hi = np.searchsorted(gt_key[gt_order], [det_key[rows[0]], det_key[rows[0]] + 1])
        cols = gt_order[lo:hi]
        tp[rows], fp[rows] = _match_group(det_boxes[rows], gt_boxes[cols], np.asarray(gt.crowd, bool)[cols],
                                          iou_threshold)  # fmt: skip
    return tp, fp


def dota_map(
    gt: GroundTruthBoxes, dets: DetectedBoxes, num_classes: int, iou_threshold: float = DOTA_IOU_THRESHOLD
) -> DOTAMeanAP:
    """
    The DOTA APs of `dets` against `gt` (`crowd`: difficult) per class of `num_classes`, at
    `iou_threshold` (boxes (N, 5) XYWHA; (N, 4) XYWH ones are taken at angle 0).
    """
    tp, fp = match_detections(gt, dets, iou_threshold)
    scores, label = np.asarray(dets.scores, np.float64), np.asarray(dets.label, np.int64)
    num_gt = np.bincount(np.asarray(gt.label, np.int64)[~np.asarray(gt.crowd, bool)], minlength=num_classes)
    ap07, auc, recalls, precisions = np.full(num_classes, np.nan), np.full(num_classes, np.nan), [], []
    for k in range(num_classes):
        counted = (label == k) & (tp | fp)  # a detection on a difficult box moves neither curve
        order = np.argsort(-scores[counted], kind="mergesort")
        tp_sum, fp_sum = np.cumsum(tp[counted][order]), np.cumsum(fp[counted][order])
        recall = tp_sum / max(num_gt[k], 1)
        precision = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
        recalls.append(recall)
        precisions.append(precision)
        if num_gt[k] > 0:
            ap07[k], auc[k] = voc_ap(recall, precision, use_07_metric=True), voc_ap(recall, precision)
    return DOTAMeanAP(float(iou_threshold), ap07, auc, num_gt, np.bincount(label, minlength=num_classes),
                      tuple(recalls), tuple(precisions))  # fmt: skip
