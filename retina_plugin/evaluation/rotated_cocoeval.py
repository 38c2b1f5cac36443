"""
COCOeval's computeIoU for Detectron2's rotated XYWHA boxes, with the IoU of
`box_iou.rotated_box_iou` instead of Detectron2's compiled `pairwise_iou_rotated`, which the
Detectron2 wheel installed here cannot load. Crowd boxes are honoured (intersection / detection
area, as COCOeval does for XYWH boxes), which Detectron2's RotatedCOCOeval refuses; XYWH boxes
facing XYWHA ones become XYWHA at angle 0.

- `RotatedCOCOeval`: Detectron2's RotatedCOCOeval, pycocotools' COCOeval (Python loops);
- `RotatedIoU`: the same IoUs for faster-coco-eval's COCOeval, whose evaluate() takes them per
  image and class from computeIoU and then matches and accumulates in C++ (cocoeval.py's
  `CompiledRotatedCOCOeval`). cocoeval.py's `cocoeval_class(rotated=True)` picks between them.
"""
import itertools

import numpy as np
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.evaluation.rotated_coco_evaluation import RotatedCOCOeval as _D2RotatedCOCOeval

from .box_iou import as_rotated, box_iou, grouped_rotated_box_iou, is_rotated_boxes, rotated_box_iou

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
    a mixin ahead of faster-coco-eval's COCOeval, whose C++ matching reads these IoUs. The IoUs
    of every image and class are computed at once after its `_prepare` (one torch call per
    image and class would cost more than the whole C++ matching).
    """

    def _prepare(self):
        super()._prepare()
        self._rotated_ious = self._all_ious()

    def computeIoU(self, imgId: int, catId: int):
        """(D, G) IoU of the image's (and class's) detections with its ground truth; [] when either is empty."""
        return self._rotated_ious.get((imgId, catId), [])

    def _all_ious(self) -> dict:
        """
        {(imgId, catId): (D, G) IoU} as faster-coco-eval's computeIoU makes each: the detections by
        score descending (stable), cut at the last maxDets, against the ground truth in the order of
        the C++ dataset that the matching reads; rotated when either side is XYWHA (`box_iou`).
        """
        p = self.params
        keys, rotated, ious = [], ([], [], []), {}
        for img_id, cat_id in itertools.product(p.imgIds, p.catIds if p.useCats else [-1]):
            cat_ids = [cat_id] if p.useCats else p.catIds
            gt = self.gt_dataset.get_instances([img_id], cat_ids, bool(p.useCats))[0][0]
            dt = self.dt_dataset.get_instances([img_id], cat_ids, bool(p.useCats))[0][0]
            if len(gt) == 0 or len(dt) == 0:
                continue
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: p.maxDets[-1]]
            d, g = [dt[i]["bbox"] for i in order], [o["bbox"] for o in gt]
            crowd = [int(o.get("iscrowd", 0)) for o in gt]
            if is_rotated_boxes(d) or is_rotated_boxes(g):
                keys.append((img_id, cat_id))
                for column, value in zip(rotated, (as_rotated(d), as_rotated(g), crowd)):
                    column.append(value)
            else:
                ious[img_id, cat_id] = box_iou(d, g, crowd)
        ious.update(zip(keys, grouped_rotated_box_iou(*rotated)))
        return ious
