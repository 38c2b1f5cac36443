"""
The IoU of a detection with a ground-truth box, as every evaluation of the package takes it
(COCOeval's matching, the DOTA mAP, the error analysis, the raster evaluation): pycocotools'
for axis-aligned XYWH boxes, `retina_plugin.ops.pairwise_iou_rotated` (exact convex-polygon
intersection in torch) for Detectron2's rotated XYWHA boxes (centre, size, angle in degrees
counter-clockwise). Detectron2's own rotated IoU is a compiled op that its wheel here cannot load.
"""
from typing import List, Sequence

import numpy as np
import torch
from detectron2.structures import BoxMode
from pycocotools import mask as mask_utils

from ..ops import matched_iou_rotated, pairwise_iou_rotated

__all__ = ["box_iou", "rotated_box_iou", "grouped_rotated_box_iou", "as_rotated", "is_rotated_boxes"]

# Pairs culled at once by `grouped_rotated_box_iou` (memory: about 70 bytes each).
PAIRS_PER_CHUNK = 1 << 20
# Enclosing circles grow by this fraction so that rounding never culls a pair that touches (as ops' culling).
_GROWTH = 1.0 + 1e-6


def is_rotated_boxes(boxes) -> bool:
    """True for an (N, 5) XYWHA array (or list of 5-number boxes)."""
    shape = np.shape(boxes)
    return len(shape) == 2 and shape[1] == 5


def as_rotated(boxes) -> np.ndarray:
    """(N, 5) XYWHA float64 boxes of (N, 4) XYWH boxes (angle 0) or of XYWHA boxes (unchanged)."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 5)
    return boxes if boxes.shape[1] == 5 else BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)


def box_iou(det_boxes, gt_boxes, gt_crowd) -> np.ndarray:
    """
    (D, G) IoU of detections (D, 4) XYWH with ground truth (G, 4) XYWH as COCOeval.computeIoU
    takes it (for a crowd box, `gt_crowd` (G,) True: intersection / detection area). When either
    side is (N, 5) XYWHA, the same with rotated IoU, both sides as XYWHA (`as_rotated`).
    """
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros((len(det_boxes), len(gt_boxes)))
    if is_rotated_boxes(det_boxes) or is_rotated_boxes(gt_boxes):
        return rotated_box_iou(as_rotated(det_boxes), as_rotated(gt_boxes), gt_crowd)
    ious = mask_utils.iou(np.asarray(det_boxes, np.float64).tolist(), np.asarray(gt_boxes, np.float64).tolist(),
                          [int(c) for c in gt_crowd])  # fmt: skip
    return np.asarray(ious, dtype=np.float64).reshape(len(det_boxes), len(gt_boxes))


def rotated_box_iou(det_boxes, gt_boxes, gt_crowd) -> np.ndarray:
    """(D, G) rotated IoU of XYWHA boxes (D, 5) and (G, 5); for a crowd box intersection / detection area."""
    det, gt = np.asarray(det_boxes, np.float64).reshape(-1, 5), np.asarray(gt_boxes, np.float64).reshape(-1, 5)
    ious = pairwise_iou_rotated(torch.from_numpy(det), torch.from_numpy(gt)).double().numpy()
    crowd = np.asarray(gt_crowd, bool)
    if crowd.any():  # COCOeval's crowd IoU from the IoU: intersection = IoU (A + B) / (1 + IoU)
        ious = np.where(crowd[None, :], _crowd_iou(ious, (det[:, 2] * det[:, 3])[:, None], (gt[:, 2] * gt[:, 3])[None, :]), ious)
    return ious


def _crowd_iou(ious: np.ndarray, det_area: np.ndarray, gt_area: np.ndarray) -> np.ndarray:
    """COCOeval's crowd IoU, intersection / detection area, of IoUs and both boxes' areas (broadcast)."""
    intersection = ious * (det_area + gt_area) / (1.0 + ious)
    return intersection / np.maximum(det_area, np.finfo(np.float64).tiny)


def grouped_rotated_box_iou(det_boxes: Sequence, gt_boxes: Sequence, gt_crowd: Sequence) -> List[np.ndarray]:
    """
    `rotated_box_iou` of each group i: detections det_boxes[i] (D_i, 5) with ground truth
    gt_boxes[i] (G_i, 5) XYWHA, crowd flags gt_crowd[i] (G_i,); the same (D_i, G_i) values, in one
    culling of all groups' pairs (centre distance against the enclosing circles) and one exact IoU
    (`matched_iou_rotated`) of the pairs left, instead of a torch call per group.
    """
    dets = [np.asarray(b, np.float64).reshape(-1, 5) for b in det_boxes]
    gts = [np.asarray(b, np.float64).reshape(-1, 5) for b in gt_boxes]
    num_det, num_gt = np.array([len(b) for b in dets], np.int64), np.array([len(b) for b in gts], np.int64)
    det, gt = np.concatenate(dets or [np.zeros((0, 5))]), np.concatenate(gts or [np.zeros((0, 5))])
    det_start, gt_start = np.r_[0, np.cumsum(num_det)[:-1]], np.r_[0, np.cumsum(num_gt)[:-1]]
    pairs = num_det * num_gt
    pair_start = np.r_[0, np.cumsum(pairs)]
    ious = np.zeros(pair_start[-1])
    det_circle, gt_circle = _circles(det), _circles(gt)
    for first, last in _chunks(pairs):
        group = np.repeat(np.arange(first, last), pairs[first:last])
        k = np.arange(pair_start[first], pair_start[last]) - pair_start[group]
        d, g = det_start[group] + k // num_gt[group], gt_start[group] + k % num_gt[group]
        near = _circles_meet(det_circle, d, gt_circle, g)
        if near.any():
            exact = matched_iou_rotated(torch.from_numpy(det[d[near]]), torch.from_numpy(gt[g[near]]))
            ious[pair_start[first] + np.flatnonzero(near)] = exact.double().numpy()
    matrices = [ious[pair_start[i]:pair_start[i + 1]].reshape(num_det[i], num_gt[i]) for i in range(len(dets))]
    for m, d, g, crowd in zip(matrices, dets, gts, gt_crowd):
        crowd = np.asarray(crowd, bool)
        if crowd.any():
            m[:] = np.where(crowd[None, :], _crowd_iou(m, (d[:, 2] * d[:, 3])[:, None], (g[:, 2] * g[:, 3])[None, :]), m)
    return matrices


def _chunks(pairs: np.ndarray):
    """(first, last) ranges of consecutive groups of at most PAIRS_PER_CHUNK pairs (or one larger group)."""
    first, total = 0, 0
    for i, n in enumerate(pairs.tolist()):
        if total and total + n > PAIRS_PER_CHUNK:
            yield first, i
            first, total = i, 0
        total += n
    if first < len(pairs):
        yield first, len(pairs)


def _circles(boxes: np.ndarray):
    """(N,) centres x, y and radii, grown by _GROWTH, of the circles enclosing XYWHA boxes (N, 5)."""
    return boxes[:, 0], boxes[:, 1], 0.5 * _GROWTH * np.hypot(boxes[:, 2], boxes[:, 3])


def _circles_meet(circle1, rows1: np.ndarray, circle2, rows2: np.ndarray) -> np.ndarray:
    """(P,) whether circle1[rows1[i]] and circle2[rows2[i]] (each `_circles`) meet."""
    (x1, y1, r1), (x2, y2, r2) = circle1, circle2
    reach = r1[rows1] + r2[rows2]
    return (x1[rows1] - x2[rows2]) ** 2 + (y1[rows1] - y2[rows2]) ** 2 <= reach * reach
