"""
The IoU of a detection with a ground-truth box, as every evaluation of the package takes it
(COCOeval's matching, the DOTA mAP, the error analysis, the raster evaluation): pycocotools'
for axis-aligned XYWH boxes, `retina_plugin.ops.pairwise_iou_rotated` (exact convex-polygon
intersection in torch) for Detectron2's rotated XYWHA boxes (centre, size, angle in degrees
counter-clockwise). Detectron2's own rotated IoU is a compiled op that its wheel here cannot load.
"""
import numpy as np
import torch
from detectron2.structures import BoxMode
from pycocotools import mask as mask_utils

from ..ops import pairwise_iou_rotated

__all__ = ["box_iou", "rotated_box_iou", "as_rotated", "is_rotated_boxes"]


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
        det_area, gt_area = det[:, 2] * det[:, 3], gt[:, 2] * gt[:, 3]
        intersection = ious * (det_area[:, None] + gt_area[None, :]) / (1.0 + ious)
        ious = np.where(crowd[None, :], intersection / np.maximum(det_area[:, None], np.finfo(np.float64).tiny), ious)
    return ious
