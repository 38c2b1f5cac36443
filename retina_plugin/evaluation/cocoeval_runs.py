"""
COCOeval runs on boxes held in arrays, and their per-detection results read back in the
arrays' rows, from either COCOeval that `cocoeval.cocoeval_class` gives:

- pycocotools' keeps per image, class and area range its matches in `evalImgs` (dtMatches,
  gtMatches, dtIgnore, gtIgnore, dtIds in score order): `read_eval_imgs`.
- faster-coco-eval's keeps them in C++; its `eval['matched']` gives the (detection, ground
  truth) pairs of all thresholds and area ranges merged. One run per IoU threshold, area 'all'
  only, gives that threshold's pairs; which detections it evaluated (the first maxDets of each
  image and class by score) and which boxes it ignores follow from the inputs as COCOeval
  defines them: `compiled_arrays`.

Both return the arrays of `CocoEvaluation` (coco_matching.py), equal on the same inputs
(tests/evaluation/test_cocoeval.py). Ids are row + 1 (COCOeval's matches use 0 for "none").
"""
import contextlib
import io
from typing import Dict, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO

__all__ = ["coco_pair", "run_cocoeval", "read_eval_imgs", "compiled_arrays"]


def _coco(num_images: int, num_classes: int, annotations: list) -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i + 1} for i in range(num_images)],
        "categories": [{"id": k + 1} for k in range(num_classes)],
        "annotations": annotations,
    }
    coco.createIndex()
    return coco


def _annotations(image, label, boxes, extra: dict) -> list:
    """COCO annotation dicts, id = row + 1, area = w * h (of XYWH or XYWHA boxes)."""
    boxes = np.asarray(boxes, np.float64)
    boxes = boxes.reshape(-1, boxes.shape[1] if boxes.ndim == 2 else 4)
    columns = {key: np.asarray(values).tolist() for key, values in extra.items()}
    return [
        {"id": n + 1, "image_id": int(i) + 1, "category_id": int(k) + 1, "bbox": box, "area": box[2] * box[3],
         **{key: values[n] for key, values in columns.items()}}
        for n, (i, k, box) in enumerate(zip(np.asarray(image).tolist(), np.asarray(label).tolist(), boxes.tolist()))
    ]  # fmt: skip


def _areas(boxes) -> np.ndarray:
    """(N,) w * h of (N, 4) XYWH or (N, 5) XYWHA boxes, the "area" of `_annotations`."""
    boxes = np.asarray(boxes, np.float64)
    boxes = boxes.reshape(-1, boxes.shape[1] if boxes.ndim == 2 else 4)
    return boxes[:, 2] * boxes[:, 3]


def coco_pair(gt, dets, num_images: int, num_classes: int) -> Tuple[COCO, COCO]:
    """pycocotools COCO objects of the GroundTruthBoxes `gt` and the DetectedBoxes `dets`."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        crowd = {"iscrowd": np.asarray(gt.crowd, np.int64)}
        coco_gt = _coco(num_images, num_classes, _annotations(gt.image, gt.label, gt.boxes, crowd))
        scores = {"score": np.asarray(dets.scores, np.float64)}
        coco_dt = _coco(num_images, num_classes, _annotations(dets.image, dets.label, dets.boxes, scores))
    return coco_gt, coco_dt


def run_cocoeval(cocoeval: type, coco_gt: COCO, coco_dt: COCO, iou_thresholds, max_dets: int, area_ranges: Dict):
    """evaluate() and accumulate() of COCOeval class `cocoeval` (bbox, every image and class) at one maxDets."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = cocoeval(coco_gt, coco_dt, "bbox")
        p = evaluation.params
        p.imgIds, p.catIds = sorted(coco_gt.getImgIds()), sorted(coco_gt.getCatIds())
        p.iouThrs = np.asarray(iou_thresholds, np.float64)
        p.maxDets = [int(max_dets)]
        p.areaRng, p.areaRngLbl = list(area_ranges.values()), list(area_ranges)
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation


def _accumulated(evaluation) -> dict:
    """eval's precision, scores (T, R, K, A) and recall (T, K, A) at its one maxDets."""
    return {key: evaluation.eval[key][..., 0] for key in ("precision", "scores", "recall")}


def read_eval_imgs(evaluation, num_images: int, num_classes: int, num_dets: int, num_gt: int) -> dict:
    """The arrays of a pycocotools COCOeval run (area 'all' first), from its evalImgs."""
    T = len(evaluation.params.iouThrs)
    det_gt = np.full((T, num_dets), -1, np.int64)
    det_ignored = np.ones((T, num_dets), bool)  # stays True for a detection beyond maxDets (in no evalImgs entry)
    gt_matched = np.zeros((T, num_gt), bool)
    class_num_gt = np.zeros(num_classes, np.int64)
    class_rows = []
    stride = len(evaluation.params.areaRng) * num_images  # evalImgs: [class][area][image], area 'all' first
    for k in range(num_classes):
        rows = []
        for e in evaluation.evalImgs[k * stride : k * stride + num_images]:
            if e is None:  # neither ground truth nor detections
                continue
            dt_rows, gt_rows = np.asarray(e["dtIds"], np.int64) - 1, np.asarray(e["gtIds"], np.int64) - 1
            rows.append(dt_rows)
            det_gt[:, dt_rows] = np.asarray(e["dtMatches"]).astype(np.int64) - 1
            det_ignored[:, dt_rows] = e["dtIgnore"]
            gt_ignored = np.asarray(e["gtIgnore"], bool)
            gt_matched[:, gt_rows] = (np.asarray(e["gtMatches"]) > 0) & ~gt_ignored
            class_num_gt[k] += int((~gt_ignored).sum())
        class_rows.append(np.concatenate(rows) if rows else np.zeros(0, np.int64))
    return dict(num_gt=class_num_gt, det_gt=det_gt, det_ignored=det_ignored, gt_matched=gt_matched,
                class_rows=tuple(class_rows), **_accumulated(evaluation))  # fmt: skip


def evaluated_rows(image, label, scores, num_images: int, num_classes: int, max_dets: int) -> Tuple[np.ndarray, ...]:
    """
    Per class, the detection rows COCOeval evaluates, in the order accumulate() concatenates
    them: image by image, by score descending (stable, as its mergesort), the first `max_dets`.
    """
    image, label = np.asarray(image, np.int64), np.asarray(label, np.int64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    order = order[np.argsort(image[order], kind="mergesort")]
    order = order[np.argsort(label[order], kind="mergesort")]
    group = label[order] * num_images + image[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(order) else np.zeros(0, np.int64)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    kept = order[rank < max_dets]
    return tuple(kept[label[kept] == k] for k in range(num_classes))


def _threshold_pairs(evaluation) -> Tuple[np.ndarray, np.ndarray]:
    """(detection rows, ground-truth rows) matched by a faster-coco-eval run at one threshold and area."""
    pairs = np.array([key.split("_") for key in evaluation.eval["matched"]], np.int64).reshape(-1, 2) - 1
    return pairs[:, 0], pairs[:, 1]


def compiled_arrays(cocoeval: type, coco_gt: COCO, coco_dt: COCO, gt, dets, num_images: int, num_classes: int,
                    iou_thresholds: Sequence[float], max_dets: int, area_ranges: Dict) -> dict:  # fmt: skip
    """The arrays of faster-coco-eval's COCOeval on `coco_pair(gt, dets, ...)`, 'all' first in `area_ranges`."""
    lo, hi = area_ranges["all"]
    gt_area, det_area = _areas(gt.boxes), _areas(dets.boxes)
    gt_ignored = np.asarray(gt.crowd, bool) | (gt_area < lo) | (gt_area > hi)  # COCOeval's gtIgnore at 'all'
    class_rows = evaluated_rows(dets.image, dets.label, dets.scores, num_images, num_classes, max_dets)
    evaluated = np.zeros(len(det_area), bool)
    evaluated[np.concatenate(class_rows)] = True
    T = len(iou_thresholds)
    det_gt = np.full((T, len(det_area)), -1, np.int64)
    gt_matched = np.zeros((T, len(gt_area)), bool)
    runs = []
    for t, threshold in enumerate(iou_thresholds):
        runs.append(run_cocoeval(cocoeval, coco_gt, coco_dt, [threshold], max_dets, {"all": [lo, hi]}))
        det_rows, gt_rows = _threshold_pairs(runs[-1])
        det_gt[t, det_rows] = gt_rows
        gt_matched[t, gt_rows[~gt_ignored[gt_rows]]] = True
    # dtIgnore: matched an ignored box, or unmatched and outside the area range; beyond maxDets: ignored
    outside = (det_area < lo) | (det_area > hi)
    det_ignored = ~evaluated | np.where(det_gt >= 0, np.r_[gt_ignored, False][det_gt], outside)
    if len(area_ranges) == 1:  # accumulate() treats each threshold on its own
        arrays = [_accumulated(run) for run in runs]
        accumulated = {key: np.concatenate([a[key] for a in arrays]) for key in arrays[0]}
    else:
        accumulated = _accumulated(run_cocoeval(cocoeval, coco_gt, coco_dt, iou_thresholds, max_dets, area_ranges))
    num_gt = np.bincount(np.asarray(gt.label, np.int64)[~gt_ignored], minlength=num_classes)
    return dict(num_gt=num_gt, det_gt=det_gt, det_ignored=det_ignored, gt_matched=gt_matched,
                class_rows=class_rows, **accumulated)  # fmt: skip
