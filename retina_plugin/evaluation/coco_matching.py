"""
COCOeval on boxes held in memory (`evaluate_boxes`), read back per detection: faster-coco-eval's
when installed, else pycocotools' (cocoeval.py chooses; cocoeval_runs.py reads either).

COCOeval.evaluate() matches, per image and class and in score order, each detection to the
unmatched ground-truth box of its class with the highest IoU >= t (a crowd box takes any number
of detections, which are then ignored: neither true nor false positives); its `evalImgs` hold
those matches (dtMatches, gtMatches, dtIgnore, gtIgnore). accumulate() turns them into the
precision at 101 recall points per IoU threshold, class and area range (eval['precision'],
eval['scores'], eval['recall']). `CocoEvaluation` holds both, indexed by the caller's rows.
(faster-coco-eval does the same in C++ and keeps the matches there; see cocoeval_runs.py.)

COCOeval keeps at most maxDets detections per image and class; `evaluate_boxes` sets it to the
most detections any image has (`max_detections_per_image`), so that no detection is cut.

Rotated boxes (XYWHA, Detectron2's: centre, size, angle in degrees counter-clockwise) are matched
the same way with rotated IoU (box_iou.py), by the rotated COCOeval of the same choice
(`cocoeval_class(rotated=True)`: faster-coco-eval's or pycocotools', its computeIoU from
rotated_cocoeval.py); when one side is rotated, XYWH boxes of the other become XYWHA boxes at
angle 0, as Detectron2's RotatedCOCOeval converts them.
"""
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import numpy as np
from pycocotools.cocoeval import Params

from .box_iou import as_rotated, box_iou, is_rotated_boxes
from .cocoeval import cocoeval_class, is_compiled
from .cocoeval_runs import coco_pair, compiled_arrays, read_eval_imgs, run_cocoeval

__all__ = [
    "COCO_IOU_THRESHOLDS", "RECALL_POINTS", "AREA_RANGES", "GroundTruthBoxes", "DetectedBoxes", "Matches",
    "CocoEvaluation", "box_iou", "max_detections_per_image", "evaluate_boxes",
]  # fmt: skip

_PARAMS = Params(iouType="bbox")
COCO_IOU_THRESHOLDS = np.asarray(_PARAMS.iouThrs, np.float64)  # (10,) 0.5:0.05:0.95 exactly as COCOeval's
RECALL_POINTS = np.asarray(_PARAMS.recThrs, np.float64)  # (101,)
AREA_RANGES = dict(zip(_PARAMS.areaRngLbl, _PARAMS.areaRng))  # all, small, medium, large (pixels^2)


@dataclass
class GroundTruthBoxes:
    """G ground-truth boxes of several images; images and classes are indices from 0."""

    image: np.ndarray  # (G,) int
    label: np.ndarray  # (G,) int class index
    boxes: np.ndarray  # (G, 4) XYWH or (G, 5) XYWHA
    crowd: np.ndarray  # (G,) bool: an ignored box (COCO's iscrowd; DOTA's difficult in dota_map)


@dataclass
class DetectedBoxes:
    """D detections of the same images and classes."""

    image: np.ndarray  # (D,) int
    label: np.ndarray  # (D,) int class index
    boxes: np.ndarray  # (D, 4) XYWH or (D, 5) XYWHA
    scores: np.ndarray  # (D,)


@dataclass
class Matches:
    """COCOeval's matches at one IoU threshold, area 'all', in the caller's rows."""

    iou: float
    det_gt: np.ndarray  # (D,) the ground-truth row a detection matched, or -1
    det_ignored: np.ndarray  # (D,) matched a crowd box, or beyond maxDets: neither TP nor FP
    gt_matched: np.ndarray  # (G,) a non-crowd box a detection matched

    @property
    def det_tp(self) -> np.ndarray:
        """(D,) bool: true positives."""
        return (self.det_gt >= 0) & ~self.det_ignored


@dataclass
class CocoEvaluation:
    """
    One COCOeval run: T IoU thresholds, K classes, the A area ranges asked for (the first is
    'all', where the matches are read), R = 101 recall points, at one maxDets.
    """

    iou_thresholds: np.ndarray  # (T,)
    area_ranges: Tuple[str, ...]  # (A,)
    max_dets: int
    num_gt: np.ndarray  # (K,) non-crowd boxes per class (COCOeval's npig, area 'all')
    det_gt: np.ndarray  # (T, D) from dtMatches: ground-truth row or -1
    det_ignored: np.ndarray  # (T, D) from dtIgnore; True too for a detection beyond maxDets
    gt_matched: np.ndarray  # (T, G) from gtMatches, crowd boxes left out
    precision: np.ndarray  # (T, R, K, A) eval['precision'] at max_dets; -1 for a class without ground truth
    scores: np.ndarray  # (T, R, K, A) eval['scores']: the score reaching each recall point
    recall: np.ndarray  # (T, K, A) eval['recall']
    class_rows: Tuple[np.ndarray, ...]  # per class the detection rows as accumulate() concatenates them
    det_scores: np.ndarray  # (D,)

    def threshold_index(self, iou: float) -> int:
        """The index of IoU threshold `iou` (exactly as given to `evaluate_boxes`)."""
        found = np.flatnonzero(self.iou_thresholds == iou)
        if len(found) == 0:
            raise KeyError(f"IoU {iou!r} was not evaluated (thresholds {self.iou_thresholds.tolist()})")
        return int(found[0])

    def matches(self, iou: float) -> Matches:
        t = self.threshold_index(iou)
        return Matches(float(iou), self.det_gt[t], self.det_ignored[t], self.gt_matched[t])

    def class_ap(self, ious: Optional[Sequence[float]] = None, area: str = "all") -> np.ndarray:
        """
        (K,) AP per class (0..1) averaged over the thresholds `ious` (default: COCO's ten) as
        Detectron2's COCOEvaluator averages COCOeval's precision; NaN for a class without ground truth.
        """
        precision = self._precision(ious, area)  # (t, R, K)
        valid = precision > -1
        total = np.where(valid, precision, 0.0).sum(axis=(0, 1))
        count = valid.sum(axis=(0, 1))
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def mean_ap(self, ious: Optional[Sequence[float]] = None, area: str = "all") -> Optional[float]:
        """COCOeval.summarize's AP: the mean of the precision entries > -1; None when there is none."""
        precision = self._precision(ious, area)
        valid = precision[precision > -1]
        return float(valid.mean()) if valid.size else None

    def _precision(self, ious, area) -> np.ndarray:
        ious = COCO_IOU_THRESHOLDS if ious is None else ious
        rows = [self.threshold_index(t) for t in ious]
        return self.precision[rows][..., self.area_ranges.index(area)]

    def ranked_detections(self, k: int, iou: float) -> Tuple[np.ndarray, np.ndarray]:
        """
        The detections of class k that count at `iou` (not ignored), ranked as accumulate()
        ranks them (score descending, mergesort over the images in order): (scores (N,), tp (N,) bool).
        """
        t = self.threshold_index(iou)
        rows = self.class_rows[k]
        rows = rows[np.argsort(-self.det_scores[rows], kind="mergesort")]
        rows = rows[~self.det_ignored[t, rows]]
        return self.det_scores[rows], self.det_gt[t, rows] >= 0


def max_detections_per_image(image: np.ndarray, num_images: int) -> int:
    """The most detections one image has (at least 1): a maxDets that cuts none."""
    return max(int(np.bincount(np.asarray(image, np.int64), minlength=num_images).max(initial=0)), 1)


def evaluate_boxes(
    gt: GroundTruthBoxes, dets: DetectedBoxes, num_images: int, num_classes: int,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS, max_dets: Optional[int] = None,
    area_ranges: Sequence[str] = ("all",), use_fast_impl: bool = True,
) -> CocoEvaluation:  # fmt: skip
    """
    Run COCOeval (bbox, useCats) on `gt` and `dets` of `num_images` images and `num_classes`
    classes, at `iou_thresholds`, keeping `max_dets` detections per image and class (default:
    `max_detections_per_image`, so every detection is evaluated), over `area_ranges` (names of
    AREA_RANGES, 'all' first; box areas are w * h). Returns its matches and precision arrays.
    The COCOeval is `cocoeval_class(use_fast_impl)`'s: faster-coco-eval's when installed; when
    either side holds (N, 5) XYWHA boxes, its rotated one on both sides as XYWHA.
    """
    area_ranges = tuple(area_ranges)
    if area_ranges[0] != "all":
        raise ValueError(f"area_ranges must start with 'all', got {area_ranges}")
    max_dets = max_detections_per_image(dets.image, num_images) if max_dets is None else int(max_dets)
    thresholds = np.asarray(iou_thresholds, np.float64)
    ranges = {a: AREA_RANGES[a] for a in area_ranges}
    rotated = is_rotated_boxes(gt.boxes) or is_rotated_boxes(dets.boxes)
    if rotated:
        gt, dets = replace(gt, boxes=as_rotated(gt.boxes)), replace(dets, boxes=as_rotated(dets.boxes))
    coco_gt, coco_dt = coco_pair(gt, dets, num_images, num_classes)
    cocoeval = cocoeval_class(use_fast_impl, rotated=rotated)
    if is_compiled(cocoeval):
        arrays = compiled_arrays(cocoeval, coco_gt, coco_dt, gt, dets, num_images, num_classes, thresholds, max_dets,
                                 ranges)  # fmt: skip
    else:
        evaluation = run_cocoeval(cocoeval, coco_gt, coco_dt, thresholds, max_dets, ranges)
        arrays = read_eval_imgs(evaluation, num_images, num_classes, len(dets.scores), len(gt.image))
    return CocoEvaluation(iou_thresholds=thresholds, area_ranges=area_ranges, max_dets=max_dets,
                          det_scores=np.asarray(dets.scores, np.float64), **arrays)  # fmt: skip
