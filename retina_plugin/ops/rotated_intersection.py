"""
The exact intersection area and IoU of pairs of rotated boxes, batched in torch.

The area of A ∩ B is the area enclosed by A's outline once every point of it is moved to the
nearest point of B: the parts of the outline inside B stay, the parts outside run along B's
edges, where they enclose no area (they wind around no point outside B, and around the points
of B as the outline does). In B's frame, scaled by B's half width and half height, B is the
square [-1, 1]², the nearest point is a clamp of each coordinate, and the enclosed area is the
line integral of u dv along the clamped path (Green's theorem). Along one edge of A the clamped
v moves only while v(t) is in [-1, 1], one interval of the edge parameter t, and the clamped
u is piecewise linear there with its bends where u(t) = ±1: the trapezoid rule over those
four parameters is the integral, exactly. No sorting, no gather, no tolerance for points on
an edge: fixed shapes, no branch on values (it traces). The work is in float64, in B's frame
(A's centre and angle taken relative to B's), which keeps the error far under 1e-5 for
coordinates of large rasters and needles of 10^5:1.
"""
import math
from typing import Tuple

import torch

from .rotated_corners import rotated_corner_offsets

# Detectron2's threshold for a box of no area (box_iou_rotated_utils.h): its IoU is 0.
_MIN_AREA = 1e-14
# The path of a box disjoint from B runs on B's outline, where the integral's rounding leaves
# under 1e-13 of B's area (four terms of at most half B's area): an area under this fraction
# of B's is 0, as the culling's 0 for the pairs it skips (the IoU it drops is under 1e-12).
_ROUNDING_OF_B = 1e-12


def _slab_crossings(start: torch.Tensor, step: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        start, step: (P, 4) one coordinate of the starts of A's edges and its change along them,
            B's half size as unit.
    Returns:
        (P, 4) the lower and (P, 4) the higher edge parameter where the coordinate is -1 or +1,
        clamped to [0, 1] (any where it does not change along the edge: nothing depends on it).
    """
    inverse = torch.where(step == 0, torch.ones_like(step), step).reciprocal_()
    low, high = (-1.0 - start) * inverse, (1.0 - start) * inverse
    return torch.minimum(low, high).clamp_(0.0, 1.0), torch.maximum(low, high).clamp_(0.0, 1.0)


def _area_in_unit_square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """
    Args:
        u, v: (P, 4) A's corners in outline order, in B's frame scaled to B = [-1, 1]².
    Returns:
        (P,) the area of A ∩ B in these units: the integral of u dv along A's outline clamped.
    """
    step_u, step_v = torch.roll(u, -1, 1) - u, torch.roll(v, -1, 1) - v
    enter, leave = _slab_crossings(v, step_v)  # the edge's stretch where v is in [-1, 1]
    u_in, u_out = _slab_crossings(u, step_u)
    first = torch.minimum(torch.maximum(u_in, enter), leave)
    second = torch.minimum(torch.maximum(u_out, enter), leave)
    at_enter = torch.addcmul(u, enter, step_u).clamp_(-1.0, 1.0)
    at_first = torch.addcmul(u, first, step_u).clamp_(-1.0, 1.0)
    at_second = torch.addcmul(u, second, step_u).clamp_(-1.0, 1.0)
    at_leave = torch.addcmul(u, leave, step_u).clamp_(-1.0, 1.0)
    twice_integral_u = (
        (first - enter) * (at_enter + at_first)
        + (second - first) * (at_first + at_second)
        + (leave - second) * (at_second + at_leave)
    )
    return 0.5 * (twice_integral_u * step_v).sum(1)


def rotated_intersection_area(
    boxes1: torch.Tensor, boxes2: torch.Tensor, rounding_of_b: float = _ROUNDING_OF_B
) -> torch.Tensor:
    """
    Args:
        boxes1, boxes2: (P, 5) rotated boxes (cx, cy, w, h, angle in degrees), pair by pair.
    Returns:
        (P,) float64 areas of the intersections.
    """
    boxes1, boxes2 = boxes1.double(), boxes2.double()
    theta = boxes2[:, 4:5] * (math.pi / 180)  # deg2rad, bit for bit, in ONNX's ops
    cos, sin = torch.cos(theta), torch.sin(theta)
    gap_x, gap_y = boxes1[:, 0:1] - boxes2[:, 0:1], boxes1[:, 1:2] - boxes2[:, 1:2]
    # Box 1 seen from box 2: its corners turned by the difference of the angles, about its
    # centre turned into box 2's frame (the inverse of rotated_corner_offsets' turn).
    relative = torch.cat([boxes1[:, :2], boxes1[:, 2:4].abs(), boxes1[:, 4:5] - boxes2[:, 4:5]], dim=1)
    offset_u, offset_v = rotated_corner_offsets(relative)
    half_w, half_h = boxes2[:, 2:3].abs() / 2, boxes2[:, 3:4].abs() / 2
    # B of no width or height: any unit, its area 0 makes the intersection's 0.
    unit_w = torch.where(half_w > 0, half_w, torch.ones_like(half_w))
    unit_h = torch.where(half_h > 0, half_h, torch.ones_like(half_h))
    u = (offset_u + (gap_x * cos - gap_y * sin)) / unit_w
    v = (offset_v + (gap_x * sin + gap_y * cos)) / unit_h
    area = _area_in_unit_square(u, v)
    area = torch.where(area > 4.0 * rounding_of_b, area, torch.zeros_like(area))  # B's area is 4
    return area * (half_w * half_h)[:, 0]


def rotated_iou_of_pairs(boxes1: torch.Tensor, boxes2: torch.Tensor, min_area: float = _MIN_AREA) -> torch.Tensor:
    """
    Args:
        boxes1, boxes2: (P, 5) rotated boxes, pair by pair.
    Returns:
        (P,) float64 IoU of each pair; 0 where either box has no area.
    """
    area1 = boxes1[:, 2].double() * boxes1[:, 3].double()
    area2 = boxes2[:, 2].double() * boxes2[:, 3].double()
    inter = torch.minimum(rotated_intersection_area(boxes1, boxes2), torch.minimum(area1, area2))
    empty = (area1 < min_area) | (area2 < min_area)
    union = torch.where(empty, torch.ones_like(area1), area1 + area2 - inter)
    return torch.where(empty, torch.zeros_like(inter), inter / union)
