"""Detections from the head's outputs as torchvision's RetinaNet makes them."""
from typing import List, Tuple

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

from .postprocess import RETINA_POSTPROCESS_REGISTRY, DecodeAndNMS


@RETINA_POSTPROCESS_REGISTRY.register()
class TorchvisionDecodeAndNMS(DecodeAndNMS):
    """
    DecodeAndNMS (same keys: MODEL.RETINANET.SCORE_THRESH_TEST, TOPK_CANDIDATES_TEST,
    NMS_THRESH_TEST, BBOX_REG_WEIGHTS, TEST.DETECTIONS_PER_IMAGE) with torchvision's two
    differences (`RetinaNet.postprocess_detections`, `GeneralizedRCNNTransform.postprocess`):

    - the candidates' boxes are clipped to the image before the class-wise NMS (Detectron2 clips
      after it), which changes their overlaps and so what NMS keeps;
    - boxes are rescaled to the output size and kept even when clipping left them without area
      (Detectron2's `detector_postprocess` drops those).
    """

    def __call__(
        self,
        anchors: List[torch.Tensor],
        pred_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
        output_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """As DecodeAndNMS.__call__: per level (Hi*Wi*A, 4), (N, Hi*Wi*A, K), (N, Hi*Wi*A, 4) -> N Instances."""
        results = []
        for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
            detections = self.detect_single_image(
                anchors, [x[i] for x in pred_logits], [x[i] for x in pred_anchor_deltas], image_size
            )
            results.append(rescale(detections, output_size))
        return results

    def detect_single_image(self, anchors, logits, deltas, image_size) -> Instances:
        """anchors, logits, deltas: per level (R_i, 4), (R_i, K), (R_i, 4) of one image."""
        boxes, scores, classes = self.candidates_single_image(anchors, logits, deltas)
        boxes = Boxes(boxes)
        boxes.clip(image_size)
        keep = batched_nms(boxes.tensor, scores, classes, self.nms_thresh)[: self.detections_per_image]
        return Instances(image_size, pred_boxes=boxes[keep], scores=scores[keep], pred_classes=classes[keep])


def rescale(detections: Instances, output_size: Tuple[int, int]) -> Instances:
    """`detections` at `output_size` (h, w): boxes times output / input size per axis, as torchvision's `resize_boxes`."""
    height, width = detections.image_size
    ratio_y, ratio_x = (torch.tensor(float(o)) / torch.tensor(float(s)) for o, s in zip(output_size, (height, width)))
    boxes = detections.pred_boxes.tensor
    scaled = boxes * torch.stack([ratio_x, ratio_y, ratio_x, ratio_y]).to(boxes.device)
    return Instances(
        tuple(output_size), pred_boxes=Boxes(scaled), scores=detections.scores, pred_classes=detections.pred_classes
    )
