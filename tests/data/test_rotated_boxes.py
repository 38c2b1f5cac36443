"""
Rotated boxes from polygons (minimum-area rectangle, le90 naming) in Detectron2's XYWHA
convention, checked against hand-computed corners and against Detectron2's own drawing of a box.
"""
import math

import numpy as np
import pytest
import torch
from detectron2.utils.visualizer import Visualizer

from retina_plugin.data.rotated_boxes import le90, normalize_angle, polygon_to_xywha, rotated_box_problem, xywha_contains
from retina_plugin.ops import rotated_box_corners

# (100, 50, 40, 10, 30): w/2 along (cos 30, -sin 30) = (17.3205, -10), h/2 along (sin 30, cos 30) = (2.5, 4.3301).
CORNERS_30 = [(119.8205, 44.3301), (114.8205, 35.6699), (80.1795, 55.6699), (85.1795, 64.3301)]


def test_detectron2_draws_a_box_through_the_hand_computed_corners():
    """The convention itself: Detectron2's Visualizer draws (100, 50, 40, 10, 30) through CORNERS_30."""
    visualizer = Visualizer(np.zeros((120, 200, 3), np.uint8))
    visualizer.draw_rotated_box_with_label((100, 50, 40, 10, 30))
    drawn = {(x, y) for line in visualizer.output.ax.lines for x, y in zip(line.get_xdata(), line.get_ydata())}
    assert len(drawn) == 4
    for corner in CORNERS_30:
        assert min(math.dist(corner, point) for point in drawn) < 1e-3


@pytest.mark.parametrize(
    "corners, expected",
    [
        ([(10, 20), (50, 20), (50, 30), (10, 30)], [30, 25, 40, 10, 0]),  # axis-aligned, long side horizontal
        (CORNERS_30, [100, 50, 40, 10, 30]),
        ([(95, 50), (105, 50), (105, 90), (95, 90)], [100, 70, 40, 10, -90]),  # long side vertical: 90, named -90
        ([(10, 20), (10, 30), (50, 30), (50, 20)], [30, 25, 40, 10, 0]),  # the other winding
    ],
)
def test_polygon_to_xywha_on_known_rectangles(corners, expected):
    assert polygon_to_xywha(corners) == pytest.approx(expected, abs=2e-3)


def test_polygon_to_xywha_takes_the_minimum_area_rectangle_of_a_quadrilateral():
    """A trapezoid (30 wide at the bottom, 10 at the top, 10 high) has the 30 x 10 axis-aligned rectangle."""
    assert polygon_to_xywha([(0, 10), (30, 10), (20, 0), (10, 0)]) == pytest.approx([15, 5, 30, 10, 0], abs=2e-3)


def test_polygon_to_xywha_of_random_rectangles_is_their_le90_name():
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = [*rng.uniform(50, 500, 2), *rng.uniform(2, 120, 2), rng.uniform(-360, 360)]
        cx, cy, w, h, a = box
        if abs(w - h) < 1:  # a near-square's long side is a matter of rounding
            continue
        c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
        half_w, half_h = np.array([c, -s]) * w / 2, np.array([s, c]) * h / 2
        corners = [np.array([cx, cy]) + sw * half_w + sh * half_h for sw, sh in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
        got, expected = polygon_to_xywha(corners), le90(box)
        assert got[:4] == pytest.approx(expected[:4], abs=5e-3)
        delta = (got[4] - expected[4] + 90) % 180 - 90  # -90 and 90 name the same box
        assert abs(delta) < 0.05, (box, got)
        assert got[2] >= got[3] and -90 <= got[4] < 90


def test_le90_and_normalize_angle():
    assert le90([0, 0, 10, 40, 30]) == [0, 0, 40, 10, -60]
    assert le90([0, 0, 40, 10, 90]) == [0, 0, 40, 10, -90]
    assert le90([0, 0, 40, 10, 135]) == [0, 0, 40, 10, -45]
    assert [normalize_angle(a) for a in (180, -180, 190, -190, 540, 0)] == [-180, -180, -170, 170, -180, 0]


def test_rotated_box_problem():
    assert rotated_box_problem([1, 2, 3, 4, 500]) is None
    assert rotated_box_problem([1, 2, 0, 4, 0]) == "a rotated box of zero width or height"
    assert rotated_box_problem([1, 2, 3, -1, 0]) == "a rotated box of zero width or height"
    assert rotated_box_problem([1, 2, 3, 4]) == "not 5 numbers [cx, cy, w, h, angle]"
    assert rotated_box_problem([1, float("nan"), 3, 4, 0]) == "not 5 finite numbers [cx, cy, w, h, angle]"


def test_xywha_contains_the_corners_and_not_beyond():
    just_inside = [(100 + 0.999 * (x - 100), 50 + 0.999 * (y - 50)) for x, y in CORNERS_30]
    assert xywha_contains([100, 50, 40, 10, 30], just_inside).all()
    outside = [(119.8205 + 0.5 * math.cos(math.radians(30)), 44.3301 - 0.5 * math.sin(math.radians(30))), (100, 56)]
    assert not xywha_contains([100, 50, 40, 10, 30], outside).any()


def test_rectangles_from_the_ops_corners_are_the_boxes():
    """`retina_plugin.ops.rotated_box_corners` and `polygon_to_xywha` share the convention: a round trip gives le90(box)."""
    rng = np.random.default_rng(1)
    boxes = np.concatenate([rng.uniform(50, 500, (100, 2)), rng.uniform(2, 60, (100, 1)), rng.uniform(61, 120, (100, 1)),
                            rng.uniform(-180, 180, (100, 1))], axis=1)  # fmt: skip
    corners = rotated_box_corners(torch.tensor(boxes, dtype=torch.float64)).numpy()
    assert {(round(x, 3), round(y, 3)) for x, y in rotated_box_corners(torch.tensor([[100.0, 50, 40, 10, 30]]))[0].tolist()} == {
        (119.821, 44.33), (114.821, 35.67), (80.179, 55.67), (85.179, 64.33)}  # fmt: skip
    for box, points in zip(boxes, corners):
        got, expected = polygon_to_xywha(points), le90(box)
        assert got[:4] == pytest.approx(expected[:4], abs=5e-3)
        assert abs((got[4] - expected[4] + 90) % 180 - 90) < 0.05
