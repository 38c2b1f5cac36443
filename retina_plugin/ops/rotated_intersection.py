"""
The exact intersection area and IoU of pairs of rotated boxes, batched in torch.

The area of A ∩ B is the area enclosed by A's outline once every point of it is moved to the
nearest point of B. In B's frame, scaled by B's half width and half height, B is the square
[-1, 1]² and the nearest point is a clamp of each coordinate: the parts of the outline inside
B stay, the parts outside run along B's edges, where they enclose no area (they wind around no
point of the plane outside B, and around the points of B as the outline does). Along one edge of A the
clamped path is straight between the at most four parameters where the edge crosses the lines
u = ±1, v = ±1; those parameters come in order from two min / max merges, so each edge gives
five points and the shoelace formula of the 20 points is the area. There is no sorting, no
gather and no tolerance for points on an edge: fixed shapes, no branch on values (it traces).
The work is in float64, in B's frame (A's centre and angle taken relative to B's), which keeps
the error far under 1e-5 for coordinates of large rasters and needles of 10^5:1.
"""
from typing import Tuple

import torch

from .rotated_corners import rotated_corner_offsets

# Detectron2's threshold for a box of no area (box_iou_rotated_utils.h): its IoU is 0.
_MIN_AREA = 1e-14
# The path of a box disjoint from B runs on B's outline, where the shoelace's rounding leaves
# under 1e-13 of B's area (20 terms of at most B's area / 2): an area under this fraction of
# B's is 0, as the culling's 0 for the pairs it skips (the IoU it drops is under 1e-12).
_ROUNDING_OF_B = 1e-12


def _slab_crossings(start: torch.Tensor, end: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        start, end: (P, 4) one coordinate of the ends of A's edges, B's half size as unit.
    Returns:
        (P, 4) the lower and (P, 4) the higher edge parameter where the coordinate is -1 or +1,
        clamped to [0, 1] (arbitrary where it does not change along the edge: an extra point on
        a straight piece of the path changes no area).
    """
    step = end - start
    inverse = torch.where(step == 0, torch.ones_like(step), step).reciprocal_()
    low, high = (-1.0 - start) * inverse, (1.0 - start) * inverse
    return torch.minimum(low, high).clamp_(0.0, 1.0), torch.maximum(low, high).clamp_(0.0, 1.0)


def _clamped_outline(u: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        u, v: (P, 4) A's corners in outline order, in B's frame scaled to B = [-1, 1]².
    Returns:
        (P, 20) u and (P, 20) v of the path of A's outline clamped to B: per edge its start and
        the points at its four crossing parameters, in order along the edge.
    """
    next_u, next_v = torch.roll(u, -1, 1), torch.roll(v, -1, 1)
    u_in, u_out = _slab_crossings(u, next_u)
    v_in, v_out = _slab_crossings(v, next_v)
    # The two sorted pairs merged: first, the two middle ones in order, last.
    later_in, earlier_out = torch.maximum(u_in, v_in), torch.minimum(u_out, v_out)
    params = torch.stack(
        [
            torch.zeros_like(u_in), torch.minimum(u_in, v_in), torch.minimum(later_in, earlier_out),
            torch.maximum(later_in, earlier_out), torch.maximum(u_out, v_out),
        ],
        dim=2,
    )  # (P, 4, 5)
    path_u = torch.addcmul(u[:, :, None], params, (next_u - u)[:, :, None]).clamp_(-1.0, 1.0)
    path_v = torch.addcmul(v[:, :, None], params, (next_v - v)[:, :, None]).clamp_(-1.0, 1.0)
    return path_u.flatten(1), path_v.flatten(1)


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
    theta = torch.deg2rad(boxes2[:, 4:5])
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
    pu, pv = _clamped_outline(u, v)
    twice = (pu[:, :-1] * pv[:, 1:] - pu[:, 1:] * pv[:, :-1]).sum(1) + (pu[:, -1] * pv[:, 0] - pu[:, 0] * pv[:, -1])
    # B's area is 4 in these units: twice the area over 8 * rounding_of_b is not rounding.
    twice = torch.where(twice > 8.0 * rounding_of_b, twice, torch.zeros_like(twice))
    return 0.5 * twice * (half_w * half_h)[:, 0]


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
