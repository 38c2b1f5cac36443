"""Turning the head's outputs into detections (paper section 4, "Inference")."""
import math
from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, RotatedBoxes
from detectron2.utils.registry import Registry

from ..ops import batched_nms_rotated
from .box_transform import build_box2box_transform

RETINA_POSTPROCESS_REGISTRY = Registry("RETINA_POSTPROCESS")
RETINA_POSTPROCESS_REGISTRY.__doc__ = """
Registry for RetinaNetPlugin postprocessors, selected by cfg.MODEL.RETINA_PLUGIN.POSTPROCESS_NAME and
built from cfg.MODEL.RETINANET (*_TEST, BBOX_REG_WEIGHTS) and cfg.TEST.DETECTIONS_PER_IMAGE.
A postprocessor maps per-level logits and deltas to one `Instances` per image.
"""


def build_retina_postprocess(cfg):
    return RETINA_POSTPROCESS_REGISTRY.get(cfg.MODEL.RETINA_PLUGIN.POSTPROCESS_NAME)(cfg)


@RETINA_POSTPROCESS_REGISTRY.register()
class DecodeAndNMS:
    """
    Per level: keep (anchor, class) pairs scoring above `score_thresh`, then the best
    `topk_candidates`, and decode only their boxes. Then over all levels: class-wise NMS,
    the best `detections_per_image`, and boxes rescaled and clipped to the output size.
    With Box2BoxTransformRotated the boxes are rotated (XYWHA, `RotatedBoxes`) and the NMS is
    the exact rotated one of `retina_plugin.ops`; Detectron2's `detector_postprocess` rescales
    and clips them (`RotatedBoxes.scale`, `clip`, `nonempty`).
    """

    @configurable
    def __init__(
        self,
        *,
        box2box_transform: Box2BoxTransform,
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
    ):
        self.box2box_transform = box2box_transform
        self.score_thresh = score_thresh
        # sigmoid(z) > t  <=>  z > log(t / (1 - t)): threshold the logits, then take the
        # sigmoid of the few survivors only.
        self.logit_thresh = math.log(score_thresh / (1 - score_thresh)) if score_thresh > 0 else -math.inf
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL.RETINANET
        return {
            "box2box_transform": build_box2box_transform(cfg),
            "score_thresh": node.SCORE_THRESH_TEST,
            "topk_candidates": node.TOPK_CANDIDATES_TEST,
            "nms_thresh": node.NMS_THRESH_TEST,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    def __call__(
        self,
        anchors: List[torch.Tensor],
        pred_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
        output_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """
        Args:
            anchors: per level (Hi*Wi*A, B): B = 4 (XYXY) or 5 (XYWHA, rotated).
            pred_logits: per level (N, Hi*Wi*A, K).
            pred_anchor_deltas: per level (N, Hi*Wi*A, B).
            image_sizes: (h, w) of each image as the network saw it (before padding).
            output_sizes: (h, w) to rescale each image's boxes to (its original size).
        Returns:
            N `Instances` with pred_boxes, scores, pred_classes, at the output sizes.
        """
        results = []
        for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
            detections = self.detect_single_image(
                anchors, [x[i] for x in pred_logits], [x[i] for x in pred_anchor_deltas], image_size
            )
            results.append(detector_postprocess(detections, output_size[0], output_size[1]))
        return results

    def detect_single_image(self, anchors, logits, deltas, image_size) -> Instances:
        """anchors, logits, deltas: per level (R_i, B), (R_i, K), (R_i, B) of one image."""
        boxes, scores, classes = self.candidates_single_image(anchors, logits, deltas)
        rotated = boxes.shape[1] == 5
        nms = batched_nms_rotated if rotated else batched_nms
        keep = nms(boxes, scores, classes, self.nms_thresh)[: self.detections_per_image]
        box_type = RotatedBoxes if rotated else Boxes
        return Instances(image_size, pred_boxes=box_type(boxes[keep]), scores=scores[keep], pred_classes=classes[keep])

    def candidates_single_image(self, anchors, logits, deltas) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        The raw candidates of one image, before NMS: per level the (anchor, class) pairs above
        `score_thresh`, the best `topk_candidates` of them, decoded. Test-time augmentation
        (retina_plugin.inference.tta) merges those of several versions of an image.

        Args:
            anchors, logits, deltas: per level (R_i, B), (R_i, K), (R_i, B) of one image.
        Returns:
            boxes (R, B) in the network input's pixels (not clipped), scores (R,), classes (R,).
        """
        boxes_all, scores_all, classes_all = [], [], []
        for anchors_i, logits_i, deltas_i in zip(anchors, logits, deltas):
            # Most anchors have no class above the threshold: find the rows that do with one
            # max per anchor, then search only those rows. Candidates stay in (anchor, class)
            # order, as a search of the whole matrix would give them.
            rows = torch.nonzero(logits_i.amax(dim=1) > self.logit_thresh).squeeze(1)
            row_logits = logits_i[rows]
            row_idxs, classes = torch.nonzero(row_logits > self.logit_thresh).unbind(1)
            candidate_logits = row_logits[row_idxs, classes]
            # The best topk_candidates, back in (anchor, class) order. No Python branch on the
            # count: while tracing (export) the count is a tensor, and min(count, topk) stays
            # a graph op instead of freezing the branch the tracing image took.
            num_candidates = candidate_logits.shape[0]
            if isinstance(num_candidates, torch.Tensor):
                num_top = num_candidates.clamp(max=self.topk_candidates)
            else:
                num_top = min(num_candidates, self.topk_candidates)
            top = candidate_logits.topk(num_top).indices.sort().values
            candidate_logits, row_idxs, classes = candidate_logits[top], row_idxs[top], classes[top]
            anchor_idxs = rows[row_idxs]
            boxes_all.append(self.box2box_transform.apply_deltas(deltas_i[anchor_idxs], anchors_i[anchor_idxs]))
            scores_all.append(candidate_logits.sigmoid())
            classes_all.append(classes)
        return torch.cat(boxes_all), torch.cat(scores_all), torch.cat(classes_all)
