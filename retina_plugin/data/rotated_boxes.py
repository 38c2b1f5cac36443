"""
Rotated boxes as datasets hold them: Detectron2's XYWHA (`BoxMode.XYWHA_ABS`), (cx, cy, w, h,
angle), the angle in degrees counter-clockwise as the image is seen (y points down), so the
box's w side points along (cos a, -sin a) in pixel coordinates, as `RotatedBoxes` and
`Visualizer.draw_rotated_box_with_label` draw it.

One rectangle has four XYWHA names: (w, h, a), (w, h, a + 180) and (h, w, a +- 90). Detectron2
keeps angles in [-180, 180) (`RotatedBoxes.normalize_angles`) and no more; the boxes made here
from polygons are in addition named the way MMRotate's "le90" names them: the long side is w and
the angle is in [-90, 90). MMRotate's le90 angle turns clockwise as the image is seen (its
corners are centre + R(theta) (+-w/2, +-h/2) in pixel coordinates), so a = -theta, and its
-90 becomes 90 here, normalised back to -90.
"""
import math
from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ["normalize_angle", "le90", "polygon_to_xywha", "rotated_box_problem", "xywha_contains"]


def normalize_angle(angle: float) -> float:
    """`angle` (degrees) into [-180, 180), by Detectron2's `RotatedBoxes.normalize_angles` rule."""
    return (float(angle) + 180.0) % 360.0 - 180.0


def le90(box: Sequence[float]) -> list:
    """The same rectangle as XYWHA `box`, named with w >= h and the angle in [-90, 90)."""
    cx, cy, w, h, a = (float(v) for v in box)
    if h > w:
        w, h, a = h, w, a + 90.0
    return [cx, cy, w, h, (a + 90.0) % 180.0 - 90.0]


def polygon_to_xywha(points) -> list:
    """
    The minimum-area rectangle enclosing the polygon `points` ((K, 2) pixel coordinates, K >= 1),
    as XYWHA named by `le90`; w or h is 0 when the polygon has no area.

    OpenCV's `minAreaRect` finds the rectangle (rotating calipers on the convex hull). Its angle
    convention has changed between OpenCV versions, so the rectangle is read back from its corners
    (`boxPoints`, consecutive): the side from corner 1 to corner 2 points along
    (cos theta, sin theta) in pixel coordinates, clockwise as the image is seen, so a = -theta for
    that side; the long side is then taken as w.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    corners = cv2.boxPoints(cv2.minAreaRect(points.astype(np.float32))).astype(np.float64)
    side_a, side_b = corners[2] - corners[1], corners[1] - corners[0]
    length_a, length_b = float(np.hypot(*side_a)), float(np.hypot(*side_b))
    along = side_a if length_a >= length_b else side_b
    angle = math.degrees(math.atan2(-along[1], along[0]))
    cx, cy = corners.mean(axis=0)
    return le90([cx, cy, max(length_a, length_b), min(length_a, length_b), angle])


def rotated_box_problem(bbox) -> Optional[str]:
    """Why `bbox` is not a usable XYWHA box (not 5 finite numbers, zero or negative w or h), or None."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 5:
        return "not 5 numbers [cx, cy, w, h, angle]"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        return "not 5 finite numbers [cx, cy, w, h, angle]"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return "a rotated box of zero width or height"
    return None


def xywha_contains(box: Sequence[float], points) -> np.ndarray:
    """
    Which of `points` ((P, 2) pixel coordinates) lie inside or on the rotated box `box` (XYWHA):
    (P,) bool. Each point is turned into the box's frame, where the box is |u| <= w/2, |v| <= h/2.
    """
    cx, cy, w, h, a = (float(v) for v in box)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    u = c * dx - s * dy  # along the w side, (cos a, -sin a)
    v = s * dx + c * dy  # along the h side, (sin a, cos a)
    eps = 1e-9 * max(w, h, 1.0)
    return (np.abs(u) <= w / 2 + eps) & (np.abs(v) <= h / 2 + eps)
