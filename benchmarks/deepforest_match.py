"""
COCOeval's greedy matching of one image and one class, without COCOeval's per-box Python
loops: deepforest_report.py's recall on the 5000 boxes of a 4096² raster.

COCOeval.evaluateImg takes the detections by descending score (a stable sort: equal scores
keep their order) and matches each to the not yet matched reference box of the highest IoU
>= t; of equal IoUs the last reference box wins (its loop keeps a later box whose IoU is not
below the best so far). Here the IoUs come from torchvision's `box_iou` a chunk of detections
at a time, only the pairs at IoU >= t are kept, and they are sorted once so that each
detection's candidates are in the order COCOeval would prefer them; the greedy pass then looks
at each detection's few candidates only.
"""
from typing import Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

CHUNK = 1024  # detections per box_iou call: CHUNK x G float64 IoUs at a time


def candidate_pairs(boxes: np.ndarray, reference: np.ndarray, iou_threshold: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Every (detection, reference) pair with IoU >= `iou_threshold`.

    Args:
        boxes: (D, 4) detections, XYXY; reference: (G, 4) XYXY.
    Returns:
        (det (P,) int64, ref (P,) int64, iou (P,) float64).
    """
    dets, refs, ious = [], [], []
    reference_t = torch.as_tensor(reference, dtype=torch.float64)
    for start in range(0, len(boxes), CHUNK):
        chunk = torch.as_tensor(boxes[start : start + CHUNK], dtype=torch.float64)
        iou = box_iou(chunk, reference_t)  # (chunk, G)
        det, ref = torch.nonzero(iou >= iou_threshold, as_tuple=True)
        dets.append(det.numpy() + start)
        refs.append(ref.numpy())
        ious.append(iou[det, ref].numpy())
    if not dets:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(dets), np.concatenate(refs), np.concatenate(ious)


def greedy_match(boxes, scores, reference, iou_threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """
    COCOeval's matches of detections to reference boxes (one image, one class, every detection).

    Args:
        boxes: (D, 4) detections, XYXY pixels; scores: (D,); reference: (G, 4) XYXY.
    Returns:
        (det_ref (D,) int64: the reference box each detection matched, or -1;
         ref_matched (G,) bool).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    reference = np.asarray(reference, np.float64).reshape(-1, 4)
    det_ref = np.full(len(boxes), -1, np.int64)
    ref_matched = np.zeros(len(reference), bool)
    if len(boxes) == 0 or len(reference) == 0:
        return det_ref, ref_matched
    rank = np.empty(len(boxes), np.int64)
    rank[np.argsort(-np.asarray(scores, np.float64), kind="mergesort")] = np.arange(len(boxes))
    det, ref, iou = candidate_pairs(boxes, reference, iou_threshold)
    # By detection rank, then IoU descending, then reference index descending (COCOeval's tie rule).
    order = np.lexsort((-ref, -iou, rank[det]))
    det, ref = det[order], ref[order]
    starts = np.flatnonzero(np.r_[True, det[1:] != det[:-1]]) if len(det) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(det)]
    for start, end in zip(starts.tolist(), ends.tolist()):
        for candidate in ref[start:end].tolist():
            if not ref_matched[candidate]:
                ref_matched[candidate] = True
                det_ref[det[start]] = candidate
                break
    return det_ref, ref_matched
