"""
COCOeval's computeIoU for Detectron2's rotated XYWHA boxes, with the IoU of
`box_iou.rotated_box_iou` instead of Detectron2's compiled `pairwise_iou_rotated`, which the
Detectron2 wheel installed here cannot load. Crowd boxes are honoured (intersection / detection
area, as COCOeval does for XYWH boxes), which Detectron2's RotatedCOCOeval refuses; XYWH boxes
facing XYWHA ones become XYWHA at angle 0.

- `RotatedCOCOeval`: Detectron2's RotatedCOCOeval, pycocotools' COCOeval (Python loops);
- `RotatedIoU`: the same computeIoU for faster-coco-eval's COCOeval, whose evaluate() calls it
  per image and class and then matches and accumulates in C++ (cocoeval.py's
  `CompiledRotatedCOCOeval`). cocoeval.py's `cocoeval_class(rotated=True)` picks between them.
"""
import numpy as np
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.evaluation.rotated_coco_evaluation import RotatedCOCOeval as _D2RotatedCOCOeval

from .box_iou import as_rotated, box_iou, rotated_box_iou

__all__ = ["RotatedCOCOeval", "RotatedCOCOevalMaxDets", "RotatedIoU"]


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


class RotatedIoU:
    """
    faster-coco-eval's COCOeval.computeIoU for "bbox" with the rotated IoU of `RotatedCOCOeval`:
    a mixin ahead of faster-coco-eval's COCOeval, whose C++ matching reads these IoUs.
    """

    def computeIoU(self, imgId: int, catId: int):
        """
        (D, G) IoU of the image's (and class's) detections, by score descending and cut at the
        last maxDets, with its ground truth, in the order of the C++ dataset that the matching
        reads; [] when either side is empty. As faster-coco-eval's own, only the IoU differs.
        """
        p = self.params
        cat_ids = [catId] if p.useCats else p.catIds
        gt = self.gt_dataset.get_instances([imgId], cat_ids, bool(p.useCats))[0][0]
        dt = self.dt_dataset.get_instances([imgId], cat_ids, bool(p.useCats))[0][0]
        if len(gt) == 0 or len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: p.maxDets[-1]]
        crowd = [int(g.get("iscrowd", 0)) for g in gt]
        return box_iou([dt[i]["bbox"] for i in order], [g["bbox"] for g in gt], crowd)
