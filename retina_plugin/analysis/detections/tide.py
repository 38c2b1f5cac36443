"""
TIDE's error types (Bolya et al., ECCV 2020; tidecv's quantify.py) and the AP each costs.

Every false positive at the foreground IoU t_f (default 0.5) gets the first type that fits,
in tidecv's order (t_b = 0.1 the background IoU; IoU with non-crowd boxes of the image):
  loc   t_b <= the highest IoU with a box of its class <= t_f,
  cls   IoU >= t_f with a box of another class,
  dupe  IoU >= t_f with a box of its class that a higher-scoring detection matched,
  bkg   IoU <= t_b with every box (or the image has none),
  both  otherwise (wrong class, t_b < IoU < t_f).
A box no detection matched is "missed" unless a loc or cls error points at it.

Fixing a type (each type on its own, from the original detections), as tidecv fixes it:
  loc / cls   the error becomes a true positive of the box it points at (cls: in that box's
              class), if no detection matched that box and it is the best-scoring loc or cls
              error pointing at it; otherwise it is dropped;
  dupe, bkg, both   the detection is dropped;
  missed      the box leaves the ground-truth count of its class.
The AP lost to a type = max(AP after fixing it - AP, 0) (tidecv clamps the same way), AP being
COCO's AP at t_f (the mean over the classes with ground truth), by COCOeval run on the fixed
detections and ground truth, so the unfixed AP is pycocotools' AP50. A fixed loc / cls error
takes its box's place (box and class), which COCOeval then matches to it at IoU 1; no other
detection's match changes, since no detection matched that box.
"""
from dataclasses import dataclass, replace
from typing import List, Optional

import numpy as np

from ...evaluation import Matches
from .detection_data import Detections, GroundTruth, evaluate, image_slices

__all__ = ["ERROR_TYPES", "BACKGROUND_IOU", "Errors", "classify_errors", "fixed_ap", "error_summary"]

ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "missed")
CLS, LOC, BOTH, DUPE, BKG = range(5)
BACKGROUND_IOU = 0.1


@dataclass
class Errors:
    det_error: np.ndarray  # (D,) index into ERROR_TYPES, -1 for true positives and ignored detections
    det_target: np.ndarray  # (D,) the flat ground-truth box of a loc / cls error, else -1
    det_fixable: np.ndarray  # (D,) a loc / cls error that becomes a true positive when fixed
    gt_missed: np.ndarray  # (G,)


def classify_errors(
    gt: GroundTruth, dets: Detections, ious: List[np.ndarray], matches: Matches, background_iou: float = BACKGROUND_IOU
) -> Errors:
    """The TIDE type of every false positive of `matches` and the missed boxes."""
    fg, bg = matches.iou, background_iou
    det_error = np.full(len(dets), -1, np.int64)
    det_target = np.full(len(dets), -1, np.int64)
    fixable = np.zeros(len(dets), bool)
    usable = np.zeros(len(gt.cls), bool)
    false_pos = ~matches.det_tp & ~matches.det_ignored
    num = len(gt.image_ids)
    g, d = image_slices(gt.image, num), image_slices(dets.image, num)
    for i in range(num):
        rows = np.flatnonzero(false_pos[d[i] : d[i + 1]])
        cols = np.flatnonzero(~gt.crowd[g[i] : g[i + 1]])
        if len(cols) == 0:
            det_error[d[i] + rows] = BKG
            continue
        used = matches.gt_matched[g[i] + cols]
        best = {}  # box -> detection: the best-scoring loc / cls error on an unused box
        for r in rows:
            iou = ious[i][r, cols]
            same = gt.cls[g[i] + cols] == dets.cls[d[i] + r]
            cls_iou, other_iou = iou * same, iou * ~same
            target = -1
            if bg <= cls_iou.max() <= fg:
                kind, target = LOC, int(np.argmax(cls_iou))
            elif other_iou.max() >= fg:
                kind, target = CLS, int(np.argmax(other_iou))
            elif (cls_iou * used).max() >= fg:
                kind = DUPE
            elif iou.max() <= bg:
                kind = BKG
            else:
                kind = BOTH
            det_error[d[i] + r] = kind
            if target >= 0:
                det_target[d[i] + r] = g[i] + cols[target]
                if not used[target] and target not in best:  # rows are in score order
                    best[target] = d[i] + r
                    usable[g[i] + cols[target]] = True
        fixable[list(best.values())] = True
    gt_missed = ~gt.crowd & ~matches.gt_matched & ~usable
    return Errors(det_error, det_target, fixable, gt_missed)


def fixed_ap(gt: GroundTruth, dets: Detections, matches: Matches, errors: Errors, fix: Optional[str] = None) -> float:
    """Mean AP (0..1) at matches.iou over the classes with ground truth, with the errors of type `fix` fixed."""
    keep, gt_keep = np.ones(len(dets), bool), np.ones(len(gt.cls), bool)
    cls, boxes = dets.cls.copy(), dets.boxes.copy()
    if fix in ("dupe", "bkg", "both"):
        keep &= errors.det_error != ERROR_TYPES.index(fix)
    elif fix in ("loc", "cls"):
        these = errors.det_error == ERROR_TYPES.index(fix)
        keep &= ~these | errors.det_fixable
        fixed = these & errors.det_fixable
        cls[fixed], boxes[fixed] = gt.cls[errors.det_target[fixed]], gt.boxes[errors.det_target[fixed]]
    elif fix == "missed":
        gt_keep = ~errors.gt_missed
    elif fix is not None:
        raise ValueError(f"unknown error type {fix!r}; one of {ERROR_TYPES}")
    classes = np.flatnonzero(gt.num_gt() > 0)
    if len(classes) == 0:
        return float("nan")
    kept = {key: getattr(gt, key)[gt_keep] for key in ("image", "cls", "boxes", "crowd")}
    fixed_gt = replace(gt, **kept)
    fixed_dets = Detections(dets.image[keep], cls[keep], boxes[keep], dets.scores[keep])
    ap = evaluate(fixed_gt, fixed_dets, [matches.iou]).class_ap([matches.iou])
    return float(np.mean(np.nan_to_num(ap[classes], nan=0.0)))  # a class whose boxes were all missed: 0


def error_summary(gt: GroundTruth, dets: Detections, matches: Matches, errors: Errors) -> dict:
    """{"iou", "background_iou", "ap", "errors": {type: {"count", "fixed_ap", "delta_ap"}}}, AP in percent."""
    base = fixed_ap(gt, dets, matches, errors)
    out = {}
    for name in ERROR_TYPES:
        if name == "missed":
            count = int(errors.gt_missed.sum())
        else:
            count = int((errors.det_error == ERROR_TYPES.index(name)).sum())
        ap = fixed_ap(gt, dets, matches, errors, name)
        out[name] = {"count": count, "fixed_ap": 100 * ap, "delta_ap": 100 * max(ap - base, 0.0)}
    return {"iou": matches.iou, "background_iou": BACKGROUND_IOU, "ap": 100 * base, "errors": out}
