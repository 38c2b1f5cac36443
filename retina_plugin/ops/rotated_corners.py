"""
The four corners of rotated boxes in Detectron2's convention.

A rotated box is (cx, cy, w, h, angle): the angle in degrees counter-clockwise as seen in the
image, whose y axis points down (`detectron2.structures.RotatedBoxes`). A point (u, v) of the
unrotated box, relative to its centre, lands at (cx + u cos a + v sin a, cy - u sin a + v cos a),
the formula of Detectron2's `Visualizer.draw_rotated_box_with_label` and of its compiled
`get_rotated_vertices`.
"""
import math

import torch


def rotated_corner_offsets(boxes: torch.Tensor):
    """
    The corners relative to each box's centre.

    Args:
        boxes: (N, 5) rotated boxes (cx, cy, w, h, angle in degrees).
    Returns:
        (N, 4) x and (N, 4) y offsets, in `boxes`' dtype: top-left, top-right, bottom-right,
        bottom-left of the unrotated box, turned by the angle. Their signed (shoelace) area with
        y down is positive: the outline runs clockwise on the screen, counter-clockwise in (x, y).
    """
    # torch.deg2rad's own product (ATen multiplies by this double), which ONNX export has
    theta = boxes[:, 4:5] * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    half_w, half_h = boxes[:, 2:3] / 2, boxes[:, 3:4] / 2
    # The unrotated corners: top-left, top-right, bottom-right, bottom-left (y down).
    u = torch.cat([-half_w, half_w, half_w, -half_w], dim=1)
    v = torch.cat([-half_h, -half_h, half_h, half_h], dim=1)
    return u * cos + v * sin, v * cos - u * sin


def rotated_box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """
    Args:
        boxes: (N, 5) rotated boxes (cx, cy, w, h, angle in degrees counter-clockwise).
    Returns:
        (N, 4, 2) corners (x, y) in image coordinates: top-left, top-right, bottom-right,
        bottom-left of the unrotated box, turned about the centre.
    """
    x, y = rotated_corner_offsets(boxes)
    return torch.stack([x + boxes[:, 0:1], y + boxes[:, 1:2]], dim=2)
