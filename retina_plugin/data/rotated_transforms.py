"""
Rotated boxes through Detectron2's augmentations. fvcore transforms move a data type by an
`apply_<type>` method registered with `Transform.register_type`; Detectron2 registers
"rotated_box" for HFlipTransform, ResizeTransform and NoOpTransform only. This module registers it
for the other transforms that move pixels (VFlip, Rotation, Crop, Pad, Scale) and for those that
change colours only, so that `TransformList.apply_rotated_box` moves an (N, 5) XYWHA array
through whatever augmentations the mapper ran.
"""
import numpy as np
from detectron2.data import transforms as T
from detectron2.data.transforms.transform import Resize_rotated_box
from detectron2.structures import BoxMode
from fvcore.transforms import transform as F

from ..config import ConfigError
from .rotated_boxes import normalize_angle

__all__ = ["transform_rotated_annotation"]


def _vflip(transform, boxes):
    """y -> height - y turns the w side (cos a, -sin a) into (cos a, sin a): the angle is negated."""
    boxes[:, 1] = transform.height - boxes[:, 1]
    boxes[:, 4] = -boxes[:, 4]
    return boxes


def _rotation(transform, boxes):
    """The centre moves as a point does; the box turns with the image, counter-clockwise by its angle."""
    boxes[:, :2] = transform.apply_coords(boxes[:, :2])
    boxes[:, 4] += transform.angle
    return boxes


def _shift(dx, dy):
    def move(transform, boxes):
        boxes[:, 0] += dx(transform)
        boxes[:, 1] += dy(transform)
        return boxes

    return move


def _unmoved(transform, boxes):
    return boxes


F.VFlipTransform.register_type("rotated_box", _vflip)
T.RotationTransform.register_type("rotated_box", _rotation)
F.CropTransform.register_type("rotated_box", _shift(lambda t: -t.x0, lambda t: -t.y0))
F.PadTransform.register_type("rotated_box", _shift(lambda t: t.x0, lambda t: t.y0))
# Detectron2's formula for ResizeTransform reads the same attributes (h, w, new_h, new_w).
F.ScaleTransform.register_type("rotated_box", Resize_rotated_box)
for _colour_only in (T.ColorTransform, F.BlendTransform):
    _colour_only.register_type("rotated_box", _unmoved)


def _as_xywha(annotation) -> list:
    """The annotation's box as XYWHA; a horizontal box (XYWH or XYXY) becomes one of angle 0."""
    mode = annotation["bbox_mode"]
    if mode == BoxMode.XYWHA_ABS:
        return [float(v) for v in annotation["bbox"]]
    xywh = BoxMode.convert(list(annotation["bbox"]), mode, BoxMode.XYWH_ABS)
    return BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)


def transform_rotated_annotation(annotation: dict, transforms) -> dict:
    """
    Move the annotation's box by `transforms` (a TransformList or list of Transforms) as an XYWHA
    box, in place: its "bbox" becomes [cx, cy, w, h, angle] with the angle in [-180, 180),
    "bbox_mode" XYWHA_ABS. Boxes are not clipped here: `annotations_to_instances_rotated` clips
    the nearly horizontal ones (`RotatedBoxes.clip`). A transform with no rule for rotated boxes
    raises a ConfigError naming it.
    """
    if isinstance(transforms, (tuple, list)):
        transforms = T.TransformList(transforms)
    for t in transforms.transforms:
        if not hasattr(t, "apply_rotated_box"):
            raise ConfigError(
                f"the augmentation {type(t).__name__} cannot move rotated boxes: leave it out of the "
                "augmentations of a rotated model (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator)"
            )
    box = transforms.apply_rotated_box(np.array([_as_xywha(annotation)], dtype=np.float64))[0]
    box[4] = normalize_angle(box[4])
    annotation["bbox"] = box
    annotation["bbox_mode"] = BoxMode.XYWHA_ABS
    return annotation
