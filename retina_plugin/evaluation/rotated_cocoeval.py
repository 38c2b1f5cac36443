"""
Detectron2's RotatedCOCOeval (pycocotools' COCOeval whose computeIoU takes XYWHA boxes) with
its IoU from `box_iou.rotated_box_iou` instead of Detectron2's compiled `pairwise_iou_rotated`,
which the Detectron2 wheel installed here cannot load. It also honours crowd boxes
(intersection / detection area, as COCOeval does for XYWH boxes), which Detectron2's refuses.
"""
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.evaluation.rotated_coco_evaluation import RotatedCOCOeval as _D2RotatedCOCOeval

from .box_iou import as_rotated, rotated_box_iou
from .cocoeval import COCO_MAX_DETS

__all__ = ["RotatedCOCOeval", "RotatedCOCOevalMaxDets", "rotated_cocoeval_class"]


class RotatedCOCOeval(_D2RotatedCOCOeval):
    """COCOeval (iouType "bbox") of XYWHA boxes; XYWH boxes facing XYWHA ones become XYWHA at angle 0."""

    def compute_iou_dt_gt(self, dt, gt, is_crowd):
        """(D, G) IoU of the detections' and ground truth's "bbox" lists (each box 4 or 5 numbers)."""
        if self.is_rotated(dt) or self.is_rotated(gt):
            return rotated_box_iou(as_rotated(dt), as_rotated(gt), is_crowd)
        return super().compute_iou_dt_gt(dt, gt, is_crowd)


class RotatedCOCOevalMaxDets(RotatedCOCOeval):
    """The same, summarized as Detectron2's COCOevalMaxDets (AP at maxDets[2], not 100)."""

    summarize = COCOevalMaxDets.summarize


def rotated_cocoeval_class(max_dets: int = COCO_MAX_DETS) -> type:
    """RotatedCOCOeval, or RotatedCOCOevalMaxDets when its summary reports AP at another maxDets than 100."""
    return RotatedCOCOeval if int(max_dets) == COCO_MAX_DETS else RotatedCOCOevalMaxDets
