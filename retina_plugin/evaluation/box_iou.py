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

from ..ops import matched_iou_rotated, overlap_candidates, pairwise_iou_rotated

__all__ = ["box_iou", "rotated_box_iou", "grouped_rotated_box_iou", "as_rotated", "is_rotated_boxes"]

# Enclosing circles grow by this fraction so that rounding never culls a pair that touches (as ops' culling).
_GROWTH = 1.0 + 1e-6
# A group of up to this many pairs is culled by numpy broadcasting (fast for the many small groups of
# COCOeval's images and classes); a larger one (a raster of 10^4 crowns) by ops' sort-based culling (memory).
BROADCAST_PAIRS = 1 << 20


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
    return _with_crowd_iou(ious, det, gt, gt_crowd)


def _with_crowd_iou(ious: np.ndarray, det: np.ndarray, gt: np.ndarray, gt_crowd) -> np.ndarray:
    """The (D, G) IoU of XYWHA det (D, 5) and gt (G, 5), COCOeval's intersection / detection area for crowd boxes."""
    crowd = np.asarray(gt_crowd, bool)
    if not crowd.any():
        return ious
    det_area, gt_area = (det[:, 2] * det[:, 3])[:, None], (gt[:, 2] * gt[:, 3])[None, :]
    intersection = ious * (det_area + gt_area) / (1.0 + ious)  # from the IoU: IoU (A + B) / (1 + IoU)
    return np.where(crowd[None, :], intersection / np.maximum(det_area, np.finfo(np.float64).tiny), ious)


def grouped_rotated_box_iou(det_boxes: Sequence, gt_boxes: Sequence, gt_crowd: Sequence) -> List[np.ndarray]:
    """
    `rotated_box_iou` of each group i: detections det_boxes[i] (D_i, 5) with ground truth
    gt_boxes[i] (G_i, 5) XYWHA, crowd flags gt_crowd[i] (G_i,); the same (D_i, G_i) values. Each
    group is culled (`_near_pairs`), and the pairs left of all groups go through one exact IoU
    (`matched_iou_rotated`), instead of a torch call per group.
    """
    dets = [np.asarray(b, np.float64).reshape(-1, 5) for b in det_boxes]
    gts = [np.asarray(b, np.float64).reshape(-1, 5) for b in gt_boxes]
    near = [_near_pairs(d, g) for d, g in zip(dets, gts)]
    det_pairs = np.concatenate([d[rows] for d, (rows, _) in zip(dets, near)] or [np.zeros((0, 5))])
    gt_pairs = np.concatenate([g[cols] for g, (_, cols) in zip(gts, near)] or [np.zeros((0, 5))])
    exact = matched_iou_rotated(torch.from_numpy(det_pairs), torch.from_numpy(gt_pairs)).double().numpy()
    ends = np.cumsum([len(rows) for rows, _ in near])
    matrices = []
    for d, g, crowd, (rows, cols), values in zip(dets, gts, gt_crowd, near, np.split(exact, ends[:-1])):
        ious = np.zeros((len(d), len(g)))
        ious[rows, cols] = values
        matrices.append(_with_crowd_iou(ious, d, g, crowd))
    return matrices


def _near_pairs(det: np.ndarray, gt: np.ndarray):
    """(K,) rows of det (D, 5) and (K,) of gt (G, 5) of the pairs that may overlap (a superset of those that do)."""
    if len(det) * len(gt) <= BROADCAST_PAIRS:
        return np.nonzero(_circles_meet(det, gt))
    rows, cols = overlap_candidates(torch.from_numpy(det), torch.from_numpy(gt))
    return rows.numpy(), cols.numpy()


def _circles_meet(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(D, G) whether the enclosing circles of XYWHA boxes det (D, 5) and gt (G, 5), grown by _GROWTH, meet."""
    reach = 0.5 * _GROWTH * (np.hypot(det[:, 2], det[:, 3])[:, None] + np.hypot(gt[:, 2], gt[:, 3])[None, :])
    return (det[:, None, 0] - gt[None, :, 0]) ** 2 + (det[:, None, 1] - gt[None, :, 1]) ** 2 <= reach * reach
