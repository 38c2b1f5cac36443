"""
The box coding of a config: horizontal boxes (x0, y0, x1, y1), regressed as (dx, dy, dw, dh) by
Detectron2's `Box2BoxTransform`; or, when MODEL.ANCHOR_GENERATOR.NAME is Detectron2's
`RotatedAnchorGenerator`, rotated boxes (cx, cy, w, h, angle in degrees counter-clockwise),
regressed as (dx, dy, dw, dh, da) by `Box2BoxTransformRotated`. MODEL.RETINANET.BBOX_REG_WEIGHTS
holds one weight per delta, so 4 or 5.
"""
import torch
from detectron2.modeling.box_regression import Box2BoxTransform, Box2BoxTransformRotated

# The anchor generators whose anchors (and so boxes) are rotated: (R, 5) XYWHA.
ROTATED_ANCHOR_GENERATORS = ("RotatedAnchorGenerator",)


def is_rotated(cfg) -> bool:
    """Whether the config's model predicts rotated boxes (its anchor generator makes rotated anchors)."""
    return cfg.MODEL.ANCHOR_GENERATOR.NAME in ROTATED_ANCHOR_GENERATORS


def box_dim(cfg) -> int:
    """Numbers per box and per regression target: 5 for rotated boxes, 4 otherwise."""
    return 5 if is_rotated(cfg) else 4


def build_box2box_transform(cfg):
    """Box2BoxTransformRotated or Box2BoxTransform, with MODEL.RETINANET.BBOX_REG_WEIGHTS."""
    weights = cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS
    return Box2BoxTransformRotated(weights=weights) if is_rotated(cfg) else Box2BoxTransform(weights=weights)


def nearest_equivalent_angle(boxes, reference):
    """
    The rotated boxes `boxes` (N, 5) with each angle replaced by the one of angle and angle +- 180
    (the same rectangle) nearest the angle of the box of `reference` (N, 5) in the same row.
    A regression target from an anchor then turns by da in [-90, 90) degrees instead of
    [-180, 180): a rectangle at 179 and one at -179 degrees, nearly the same box, get nearly
    the same target rather than +-179 degrees apart.
    """
    turn = boxes[:, 4] - reference[:, 4]
    angle = reference[:, 4] + (turn + 90.0) % 180.0 - 90.0
    return torch.cat((boxes[:, :4], angle[:, None]), dim=1)
