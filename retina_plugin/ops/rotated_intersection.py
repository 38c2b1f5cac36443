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


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _edge_crossings(
    p1: torch.Tensor, p2: torch.Tensor, tolerance: float = _EDGE_TOLERANCE, parallel_sine: float = _PARALLEL_SINE
):
    """
    Where each edge of one quadrilateral crosses each edge of the other.

    Args:
        p1, p2: (P, 4, 2) corners in outline order.
    Returns:
        (P, 16, 2) crossing points and the (P, 16) mask of those that exist.
    """
    d1 = torch.roll(p1, -1, dims=1) - p1
    d2 = torch.roll(p2, -1, dims=1) - p2
    a, d = p1[:, :, None, :], d1[:, :, None, :]  # (P, 4, 1, 2): edge a + t d, t in [0, 1]
    b, e = p2[:, None, :, :], d2[:, None, :, :]  # (P, 1, 4, 2): edge b + u e, u in [0, 1]
    det = _cross(d, e)  # (P, 4, 4)
    lengths = torch.linalg.vector_norm(d, dim=-1) * torch.linalg.vector_norm(e, dim=-1)
    crossing = det.abs() > parallel_sine * lengths
    det = torch.where(crossing, det, torch.ones_like(det))
    ba = b - a
    t = _cross(ba, e) / det
    u = _cross(ba, d) / det
    low, high = -tolerance, 1.0 + tolerance
    crossing = crossing & (t >= low) & (t <= high) & (u >= low) & (u <= high)
    points = a + t[..., None] * d
    return points.flatten(1, 2), crossing.flatten(1, 2)


def _inside(
    points: torch.Tensor, corners: torch.Tensor, tolerance: float = _EDGE_TOLERANCE, min_area: float = _MIN_AREA
) -> torch.Tensor:
    """
    Args:
        points: (P, K, 2); corners: (P, 4, 2) of a rectangle in outline order.
    Returns:
        (P, K) whether each point lies in its pair's rectangle (or on its edge).
    """
    origin = corners[:, None, 0]
    side_x = corners[:, None, 1] - origin  # (P, 1, 2)
    side_y = corners[:, None, 3] - origin
    rel = points - origin
    along_x = (rel * side_x).sum(-1) / (side_x * side_x).sum(-1).clamp_min(min_area)
    along_y = (rel * side_y).sum(-1) / (side_y * side_y).sum(-1).clamp_min(min_area)
    low, high = -tolerance, 1.0 + tolerance
    return (along_x >= low) & (along_x <= high) & (along_y >= low) & (along_y <= high)


def _convex_area(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """
    Area of the convex polygon whose vertices are the valid points, in any order, with repeats.

    Args:
        points: (P, K, 2); valid: (P, K) bool.
    Returns:
        (P,) areas; 0 where fewer than three distinct points are valid.
    """
    count = valid.sum(1, keepdim=True).clamp_min(1).to(points.dtype)
    centre = torch.where(valid[..., None], points, torch.zeros_like(points)).sum(1) / count
    rel = points - centre[:, None, :]
    dx, dy = rel[..., 0], rel[..., 1]
    # A pseudo-angle, increasing with atan2(dy, dx) on [0, 4): cheaper than atan2 and exports to ONNX.
    span = dx.abs() + dy.abs()
    cos_like = torch.where(span > 0, dx / torch.where(span > 0, span, torch.ones_like(span)), torch.ones_like(span))
    angle = torch.where(dy >= 0, 1.0 - cos_like, 3.0 + cos_like)
    angle = torch.where(valid, angle, torch.full_like(angle, 8.0))
    order = torch.argsort(angle, dim=1)
    ordered = torch.gather(rel, 1, order[..., None].expand(-1, -1, 2))
    ordered_valid = torch.gather(valid, 1, order)
    # Unused slots repeat the first vertex: their edges have no length and close the outline.
    ordered = torch.where(ordered_valid[..., None], ordered, ordered[:, :1])
    fan = _cross(ordered, torch.roll(ordered, -1, dims=1))
    return (0.5 * fan.sum(1)).clamp_min(0)


def rotated_intersection_area(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """
    Args:
        boxes1, boxes2: (P, 5) rotated boxes (cx, cy, w, h, angle in degrees), pair by pair.
    Returns:
        (P,) float64 areas of the intersections.
    """
    boxes1, boxes2 = boxes1.double(), boxes2.double()
    half_gap = (boxes1[:, None, :2] - boxes2[:, None, :2]) / 2
    p1 = rotated_corner_offsets(boxes1) + half_gap
    p2 = rotated_corner_offsets(boxes2) - half_gap
    crossings, crossing = _edge_crossings(p1, p2)
    points = torch.cat([crossings, p1, p2], dim=1)
    valid = torch.cat([crossing, _inside(p1, p2), _inside(p2, p1)], dim=1)
    return _convex_area(points, valid)


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
