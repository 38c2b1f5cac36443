"""
The exact intersection area and IoU of pairs of rotated boxes, batched in torch.

Two rectangles intersect in a convex polygon whose vertices are among 24 points: the 16
crossings of an edge of one with an edge of the other, and the 4 + 4 corners of each that lie in
the other (Detectron2's compiled `box_iou_rotated` collects the same points). Every pair keeps
all 24 slots with a mask, so the whole batch runs as fixed-shape tensor operations (it traces):
the valid points are ordered by their angle about their mean, a point of the polygon's interior,
and the triangle fan about that mean gives the area. The work is in float64, each pair moved so
that its two centres straddle the origin, which keeps the error far under 1e-5 for coordinates
of large rasters.
"""
from typing import Tuple

import torch

from .rotated_corners import rotated_corner_offsets

# A point this close to a box's edge, as a fraction of that edge's length, counts as on it:
# floating point must not drop the corners of identical or touching boxes.
_EDGE_TOLERANCE = 1e-9
# Edges whose crossing angle has a sine under this are parallel; their overlap's ends are corners
# found by the inside test.
_PARALLEL_SINE = 1e-14
# Detectron2's threshold for a box of no area (box_iou_rotated_utils.h): its IoU is 0.
_MIN_AREA = 1e-14


def _edge_crossings(
    x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor,
    tolerance: float = _EDGE_TOLERANCE, parallel_sine: float = _PARALLEL_SINE,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Where each edge of one quadrilateral crosses each edge of the other.

    Args:
        x1, y1, x2, y2: (P, 4) corners of the two quadrilaterals in outline order.
    Returns:
        (P, 16) x and y of the crossing points and the (P, 16) mask of those that exist.
    """
    ex1, ey1 = torch.roll(x1, -1, 1) - x1, torch.roll(y1, -1, 1) - y1
    ex2, ey2 = torch.roll(x2, -1, 1) - x2, torch.roll(y2, -1, 1) - y2
    lengths = torch.hypot(ex1, ey1)[:, :, None] * torch.hypot(ex2, ey2)[:, None, :]
    # Edge a + t d of the first (rows), b + u e of the second (columns), t and u in [0, 1].
    ax, ay, dx, dy = x1[:, :, None], y1[:, :, None], ex1[:, :, None], ey1[:, :, None]
    bx, by, ex, ey = x2[:, None, :], y2[:, None, :], ex2[:, None, :], ey2[:, None, :]
    det = dx * ey - dy * ex  # (P, 4, 4)
    crossing = det.abs() > parallel_sine * lengths
    det = torch.where(crossing, det, torch.ones_like(det))
    bax, bay = bx - ax, by - ay
    t = (bax * ey - bay * ex) / det
    u = (bax * dy - bay * dx) / det
    low, high = -tolerance, 1.0 + tolerance
    crossing = crossing & (t >= low) & (t <= high) & (u >= low) & (u <= high)
    return (ax + t * dx).flatten(1), (ay + t * dy).flatten(1), crossing.flatten(1)


def _inside(
    px: torch.Tensor, py: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
    tolerance: float = _EDGE_TOLERANCE, min_area: float = _MIN_AREA,
) -> torch.Tensor:
    """
    Args:
        px, py: (P, K) points; cx, cy: (P, 4) corners of a rectangle in outline order.
    Returns:
        (P, K) whether each point lies in its pair's rectangle (or on its edge).
    """
    ox, oy = cx[:, :1], cy[:, :1]
    ux, uy = cx[:, 1:2] - ox, cy[:, 1:2] - oy  # (P, 1): the sides from the first corner
    vx, vy = cx[:, 3:4] - ox, cy[:, 3:4] - oy
    rx, ry = px - ox, py - oy
    along_u = (rx * ux + ry * uy) / (ux * ux + uy * uy).clamp_min(min_area)
    along_v = (rx * vx + ry * vy) / (vx * vx + vy * vy).clamp_min(min_area)
    low, high = -tolerance, 1.0 + tolerance
    return (along_u >= low) & (along_u <= high) & (along_v >= low) & (along_v <= high)


def _convex_area(px: torch.Tensor, py: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """
    Area of the convex polygon whose vertices are the valid points, in any order, with repeats.

    Args:
        px, py: (P, K) points; valid: (P, K) bool.
    Returns:
        (P,) areas; 0 where fewer than three distinct points are valid.
    """
    zero = torch.zeros_like(px)
    count = valid.sum(1, keepdim=True).clamp_min(1).to(px.dtype)
    rx = px - torch.where(valid, px, zero).sum(1, keepdim=True) / count  # about the points' mean
    ry = py - torch.where(valid, py, zero).sum(1, keepdim=True) / count
    # A pseudo-angle, increasing with atan2(ry, rx) on [0, 4): cheaper than atan2 and in ONNX.
    span = rx.abs() + ry.abs()
    cos_like = rx / torch.where(span > 0, span, torch.ones_like(span))
    angle = torch.where(ry >= 0, 1.0 - cos_like, 3.0 + cos_like)
    angle, order = torch.sort(torch.where(valid, angle, torch.full_like(angle, 8.0)), dim=1)
    used = angle < 8.0
    # Unused slots repeat the first vertex: their edges have no length and close the outline.
    ox = torch.where(used, torch.gather(rx, 1, order), torch.gather(rx, 1, order[:, :1]))
    oy = torch.where(used, torch.gather(ry, 1, order), torch.gather(ry, 1, order[:, :1]))
    fan = ox * torch.roll(oy, -1, 1) - torch.roll(ox, -1, 1) * oy
    return (0.5 * fan.sum(1)).clamp_min(0)


def rotated_intersection_area(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """
    Args:
        boxes1, boxes2: (P, 5) rotated boxes (cx, cy, w, h, angle in degrees), pair by pair.
    Returns:
        (P,) float64 areas of the intersections.
    """
    boxes1, boxes2 = boxes1.double(), boxes2.double()
    half_gap_x = (boxes1[:, 0:1] - boxes2[:, 0:1]) / 2
    half_gap_y = (boxes1[:, 1:2] - boxes2[:, 1:2]) / 2
    x1, y1 = rotated_corner_offsets(boxes1)
    x2, y2 = rotated_corner_offsets(boxes2)
    x1, y1, x2, y2 = x1 + half_gap_x, y1 + half_gap_y, x2 - half_gap_x, y2 - half_gap_y
    cross_x, cross_y, crossing = _edge_crossings(x1, y1, x2, y2)
    px = torch.cat([cross_x, x1, x2], dim=1)
    py = torch.cat([cross_y, y1, y2], dim=1)
    valid = torch.cat([crossing, _inside(x1, y1, x2, y2), _inside(x2, y2, x1, y1)], dim=1)
    return _convex_area(px, py, valid)


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
