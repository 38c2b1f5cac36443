"""The classification and box subnets of RetinaNet (paper section 4) and their losses."""
import math
from typing import Dict, List

import torch
from torch import nn
from detectron2.config import configurable
from detectron2.layers import CycleBatchNormList, ShapeSpec, ciou_loss, diou_loss, get_norm
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.utils.registry import Registry
from fvcore.nn import giou_loss, smooth_l1_loss

from .box_transform import build_box2box_transform, nearest_equivalent_angle
from .focal_loss import sigmoid_focal_loss_from_labels
from .winograd import inference_layers

RETINA_HEAD_REGISTRY = Registry("RETINA_HEAD")
RETINA_HEAD_REGISTRY.__doc__ = """
Registry for RetinaNetPlugin heads, selected by cfg.MODEL.RETINA_PLUGIN.HEAD_NAME and built
from cfg.MODEL.RETINANET (classes, convs, norm, prior, focal loss, box loss).
A head maps the pyramid features to per-level class logits and box deltas, and owns the
losses on them (`losses`).
"""


# The IoU-based box losses of Detectron2's RetinaNet, on decoded boxes.
_BOX_LOSSES = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}
# MODEL.RETINANET.BBOX_REG_LOSS_TYPE: Detectron2's RetinaNet supports these (detectron2.modeling.box_regression).
BOX_REG_LOSSES = ("smooth_l1", *_BOX_LOSSES)


def build_retina_head(cfg, input_shape: List[ShapeSpec], num_anchors: int):
    return RETINA_HEAD_REGISTRY.get(cfg.MODEL.RETINA_PLUGIN.HEAD_NAME)(cfg, input_shape, num_anchors)


def _subnet(in_channels: int, num_convs: int, norm: str, num_levels: int) -> nn.Sequential:
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1))
        if norm in ("BN", "SyncBN"):
            # The subnets are shared across levels but level statistics differ: one BN per level.
            bn_class = nn.BatchNorm2d if norm == "BN" else nn.SyncBatchNorm
            layers.append(CycleBatchNormList(length=num_levels, bn_class=bn_class, num_features=in_channels))
        elif norm:
            layers.append(get_norm(norm, in_channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@RETINA_HEAD_REGISTRY.register()
class FocalLossHead(nn.Module):
    """
    Classification subnet (NUM_CONVS x [3x3 conv, ReLU], then a 3x3 conv to A*K logits) and box
    subnet (same shape, separate weights, 3x3 conv to A*B deltas), each shared by all levels.
    B, the deltas per box, is the box2box_transform's: 4 (dx, dy, dw, dh) for horizontal boxes,
    5 (dx, dy, dw, dh, da) for rotated ones (Box2BoxTransformRotated).
    New convs start from normal(std=0.01) weights and zero bias; the logit bias is
    -log((1 - pi) / pi), so every anchor starts at foreground probability pi (paper section 4.1).
    With `winograd` (set by RetinaNetPlugin from MODEL.RETINA_PLUGIN.WINOGRAD), CPU float32
    inference runs its 3x3 convs as Winograd F(4x4, 3x3) where that applies (modeling/winograd.py).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_levels: int,
        num_anchors: int,
        num_classes: int,
        box2box_transform: Box2BoxTransform,
        num_convs: int = 4,
        norm: str = "",
        prior_prob: float = 0.01,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.1,
        winograd: bool = False,
    ):
        super().__init__()
        self.winograd = winograd
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.box2box_transform = box2box_transform
        self.box_dim = len(box2box_transform.weights)  # one weight per delta
        if self.box_dim == 5 and box_reg_loss_type != "smooth_l1":
            raise ValueError(f"box regression loss {box_reg_loss_type!r} is for horizontal boxes; rotated boxes use smooth_l1")
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

        self.cls_subnet = _subnet(in_channels, num_convs, norm, num_levels)
        self.bbox_subnet = _subnet(in_channels, num_convs, norm, num_levels)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * self.box_dim, kernel_size=3, stride=1, padding=1)

        for module in (self.cls_subnet, self.bbox_subnet, self.cls_score, self.bbox_pred):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, mean=0, std=0.01)
                    nn.init.constant_(layer.bias, 0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec], num_anchors: int):
        node = cfg.MODEL.RETINANET
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"the head's input levels have different channel counts {sorted(channels)}")
        return {
            "in_channels": channels.pop(),
            "num_levels": len(input_shape),
            "num_anchors": num_anchors,
            "num_classes": node.NUM_CLASSES,
            "box2box_transform": build_box2box_transform(cfg),
            "num_convs": node.NUM_CONVS,
            "norm": node.NORM,
            "prior_prob": node.PRIOR_PROB,
            "focal_loss_alpha": node.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": node.FOCAL_LOSS_GAMMA,
            "box_reg_loss_type": node.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": node.SMOOTH_L1_LOSS_BETA,
        }

    def forward(self, features: List[torch.Tensor]):
        """
        Args:
            features: per level (N, C, Hi, Wi), high to low resolution.
        Returns:
            logits: per level (N, Hi*Wi*A, K); deltas: per level (N, Hi*Wi*A, B), B = box_dim.
        """
        if self.winograd and not self.training and not torch.is_grad_enabled():
            # Winograd filters transformed once for all levels (modeling/winograd.py).
            cls_branch = inference_layers([*self.cls_subnet, self.cls_score], features[0], self.winograd)
            box_branch = inference_layers([*self.bbox_subnet, self.bbox_pred], features[0], self.winograd)
        else:
            def cls_branch(x):
                return self.cls_score(self.cls_subnet(x))

            def box_branch(x):
                return self.bbox_pred(self.bbox_subnet(x))

        logits, deltas = [], []
        for x in features:
            logits.append(permute_to_N_HWA_K(cls_branch(x), self.num_classes))
            deltas.append(permute_to_N_HWA_K(box_branch(x), self.box_dim))
        return logits, deltas

    def losses(
        self,
        anchors: torch.Tensor,
        pred_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        normalizer: float,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            anchors: (R, B) all levels' anchors, R = sum(Hi*Wi*A), B = box_dim (4 XYXY, 5 XYWHA).
            pred_logits, pred_anchor_deltas: outputs of `forward`.
            gt_labels: (N, R) in {-1 ignored, 0..K-1 foreground class, K background}.
            gt_boxes: (N, R, B) matched ground-truth box per anchor (used on foreground only).
            normalizer: the (smoothed) foreground anchor count the summed losses are divided by.
        Returns:
            {"loss_cls", "loss_box_reg"}: scalars.
        """
        # Level by level: concatenating the levels' logits would copy all N*R*K of them.
        level_labels = gt_labels.split([x.shape[1] for x in pred_logits], dim=1)
        loss_cls = sum(
            sigmoid_focal_loss_from_labels(
                x.reshape(-1, self.num_classes), labels.reshape(-1), self.focal_loss_alpha, self.focal_loss_gamma
            )
            for x, labels in zip(pred_logits, level_labels)
        )

        foreground = (gt_labels >= 0) & (gt_labels != self.num_classes)
        fg_deltas = torch.cat(pred_anchor_deltas, dim=1)[foreground]  # (F, B)
        fg_anchors = anchors.unsqueeze(0).expand_as(gt_boxes)[foreground]
        fg_gt_boxes = gt_boxes[foreground]
        if self.box_dim == 5:
            fg_gt_boxes = nearest_equivalent_angle(fg_gt_boxes, fg_anchors)
        if self.box_reg_loss_type == "smooth_l1":
            gt_deltas = self.box2box_transform.get_deltas(fg_anchors, fg_gt_boxes)
            loss_box_reg = smooth_l1_loss(fg_deltas, gt_deltas, beta=self.smooth_l1_beta, reduction="sum")
        elif self.box_reg_loss_type in _BOX_LOSSES:
            fg_pred_boxes = self.box2box_transform.apply_deltas(fg_deltas, fg_anchors)
            loss_box_reg = _BOX_LOSSES[self.box_reg_loss_type](fg_pred_boxes, fg_gt_boxes, reduction="sum")
        else:
            raise ValueError(f"box regression loss {self.box_reg_loss_type!r} is not smooth_l1, {', '.join(_BOX_LOSSES)}")
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

