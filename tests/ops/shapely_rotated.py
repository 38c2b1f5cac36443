"""
The reference the rotated ops are checked against: shapely polygons (GEOS), built from the box
with shapely's own rotation, and a greedy NMS written as a plain loop over them; plus random
rotated boxes.
"""
import numpy as np
import shapely
import shapely.affinity
import torch


def shapely_polygons(boxes):
    """(N,) shapely polygons of rotated boxes (N, 5): shapely turns counter-clockwise with y up, so
    the angle is negated to turn counter-clockwise on an image, whose y points down."""
    polygons = []
    for cx, cy, w, h, angle in np.asarray(boxes, dtype=np.float64):
        rect = shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        polygons.append(shapely.affinity.rotate(rect, -angle, origin=(cx, cy)))
    return np.array(polygons, dtype=object)


def _iou(poly1, poly2, boxes1, boxes2):
    # Snap-rounded to 1e-9: GEOS' plain overlay finds no area between some polygons equal up to
    # rounding (a box and the same box turned by 180 degrees).
    inter = shapely.area(shapely.intersection(poly1, poly2, grid_size=1e-9))
    area1 = np.asarray(boxes1, dtype=np.float64)[..., 2] * np.asarray(boxes1, dtype=np.float64)[..., 3]
    area2 = np.asarray(boxes2, dtype=np.float64)[..., 2] * np.asarray(boxes2, dtype=np.float64)[..., 3]
    empty = (area1 <= 0) | (area2 <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(empty, 0.0, inter / np.where(empty, 1.0, area1 + area2 - inter))


def shapely_matched_iou(boxes1, boxes2):
    """(N,) float64 IoU of boxes1[i] with boxes2[i] (N, 5)."""
    return _iou(shapely_polygons(boxes1), shapely_polygons(boxes2), boxes1, boxes2)


def shapely_pairwise_iou(boxes1, boxes2):
    """(N, M) float64 IoU of every pair."""
    b1, b2 = np.asarray(boxes1, dtype=np.float64), np.asarray(boxes2, dtype=np.float64)
    p1, p2 = shapely_polygons(b1), shapely_polygons(b2)
    return _iou(p1[:, None], p2[None, :], b1[:, None, :], b2[None, :, :])


def reference_nms(iou, scores, classes, iou_threshold):
    """Greedy NMS as a plain loop over an (N, N) IoU matrix: by decreasing score (ties: lower index
    first), a box is kept unless a kept box of its class overlaps it with IoU over the threshold."""
    scores, classes = np.asarray(scores).tolist(), np.asarray(classes).tolist()
    kept = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(classes[k] != classes[i] or iou[k, i] <= iou_threshold for k in kept):
            kept.append(i)
    return kept


def random_boxes(n, seed, extent=100.0, min_size=1.0, max_size=50.0, dtype=torch.float32):
    """(n, 5) rotated boxes: centres in [0, extent)², sizes log-uniform, angles in [-180, 180)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    log_low, log_high = np.log(min_size), np.log(max_size)
    sizes = torch.exp(log_low + torch.rand(n, 2, generator=g, dtype=torch.float64) * (log_high - log_low))
    angles = torch.rand(n, 1, generator=g, dtype=torch.float64) * 360 - 180
    return torch.cat([centres, sizes, angles], dim=1).to(dtype)
