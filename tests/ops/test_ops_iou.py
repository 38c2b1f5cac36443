"""
The exact rotated IoU (retina_plugin.ops) against shapely's polygons: thousands of random pairs
and the hard cases (identical, nested, touching by an edge or a corner, no area, ±180° and 90°
turns, extreme aspect ratios, large coordinates) within 1e-5; culling gives the dense matrix.
"""
import math

import numpy as np
import pytest
import torch

from retina_plugin.ops import matched_iou_rotated, overlap_candidates, pairwise_iou_rotated
from retina_plugin.ops.overlap_candidates import overlap_candidates_within
from retina_plugin.ops.rotated_iou import dense_pairwise_iou_rotated
from shapely_rotated import random_boxes, shapely_matched_iou, shapely_pairwise_iou

TOLERANCE = 1e-5


def _local_shift(boxes, du, dv):
    """Boxes moved by (du * w, dv * h) along their own axes (the convention of rotated_box_corners)."""
    theta = torch.deg2rad(boxes[:, 4].double())
    u, v = du * boxes[:, 2].double(), dv * boxes[:, 3].double()
    moved = boxes.clone().double()
    moved[:, 0] += u * torch.cos(theta) + v * torch.sin(theta)
    moved[:, 1] += v * torch.cos(theta) - u * torch.sin(theta)
    return moved.to(boxes.dtype)


def _hard_pairs(n=200, seed=7):
    """Named (boxes1, boxes2, expected IoU or None) cases, n pairs each."""
    base = random_boxes(n, seed, extent=100.0, min_size=2.0, max_size=40.0)
    turned = base.clone()
    turned[:, 4] = torch.where(turned[:, 4] < 0, turned[:, 4] + 180, turned[:, 4] - 180)
    swapped = base[:, [0, 1, 3, 2, 4]].clone()
    swapped[:, 4] += 90
    nested = base.clone()
    nested[:, 2:4] *= 0.5
    no_width, no_height = base.clone(), base.clone()
    no_width[:, 2] = 0
    no_height[:, 3] = 0
    right_angles = base.clone()
    right_angles[:, 4] = torch.tensor([-180.0, -90.0, 0.0, 90.0, 180.0]).repeat(n // 5 + 1)[:n]
    right_partner = _local_shift(right_angles, 0.3, -0.2)
    right_partner[:, 4] = torch.tensor([90.0, 180.0, -90.0, 0.0, -180.0, 270.0, -270.0]).repeat(n // 7 + 1)[:n]
    sliver = base.clone()
    sliver[:, 2], sliver[:, 3] = 1000.0, 0.01
    crossing_sliver = sliver.clone()
    crossing_sliver[:, 4] += torch.linspace(-3, 3, n)
    far = base.clone()
    far[:, :2] += 1e4
    far_partner = _local_shift(far, 0.25, 0.1)
    far_partner[:, 4] += 17
    return {
        "identical": (base, base.clone(), 1.0),
        "turned by 180 degrees": (base, turned, 1.0),
        "w and h swapped and turned by 90": (base, swapped, 1.0),
        "nested, half the size": (base, nested, 0.25),
        "touching by an edge": (base, _local_shift(base, 1.0, 0.0), 0.0),
        "touching by a corner": (base, _local_shift(base, 1.0, 1.0), 0.0),
        "touching by half an edge": (base, _local_shift(base, 0.5, 1.0), 0.0),
        "no width": (base, no_width, 0.0),
        "no height": (no_height, base, 0.0),
        "multiples of 90 degrees": (right_angles, right_partner, None),
        "needles 10^5:1 crossing": (sliver, crossing_sliver, None),
        "coordinates near 10^4": (far, far_partner, None),
    }


@pytest.mark.parametrize("case", list(_hard_pairs()))
def test_hard_cases_match_shapely(case):
    boxes1, boxes2, expected = _hard_pairs()[case]
    ours = matched_iou_rotated(boxes1, boxes2).double().numpy()
    reference = shapely_matched_iou(boxes1.double(), boxes2.double())
    assert np.isfinite(ours).all()
    assert np.abs(ours - reference).max() <= TOLERANCE, case
    if expected is not None:
        assert np.abs(ours - expected).max() <= TOLERANCE, case


def test_random_overlapping_pairs_match_shapely():
    """4000 pairs, most of them overlapping (the second box near the first), any angles."""
    boxes1 = random_boxes(4000, 1, extent=100.0)
    nudge = random_boxes(4000, 2, extent=20.0)
    boxes2 = nudge.clone()
    boxes2[:, :2] = boxes1[:, :2] + nudge[:, :2] - 10.0
    ours = matched_iou_rotated(boxes1, boxes2)
    assert ours.dtype == torch.float32 and ours.shape == (4000,)
    reference = shapely_matched_iou(boxes1.double(), boxes2.double())
    assert (reference > 0).mean() > 0.5
    assert np.abs(ours.double().numpy() - reference).max() <= TOLERANCE


def test_pairwise_matrix_matches_shapely_and_dtype():
    boxes1, boxes2 = random_boxes(120, 3, extent=150.0), random_boxes(90, 4, extent=150.0)
    ours = pairwise_iou_rotated(boxes1, boxes2)
    assert ours.shape == (120, 90) and ours.dtype == torch.float32
    reference = shapely_pairwise_iou(boxes1.double(), boxes2.double())
    assert (reference > 0).sum() > 100
    assert np.abs(ours.double().numpy() - reference).max() <= TOLERANCE
    as_double = pairwise_iou_rotated(boxes1.double(), boxes2.double())
    assert as_double.dtype == torch.float64
    assert np.abs(as_double.numpy() - reference).max() <= TOLERANCE


def test_culling_gives_the_dense_matrix_and_culls():
    """Boxes spread over a large image: most pairs are culled, the matrix is the dense one."""
    boxes1, boxes2 = random_boxes(300, 5, extent=700.0), random_boxes(200, 6, extent=700.0)
    boxes2[:50] = boxes1[:50]  # some identical pairs
    rows, cols = overlap_candidates(boxes1, boxes2)
    dense = dense_pairwise_iou_rotated(boxes1, boxes2)
    assert 0 < rows.numel() < 0.1 * dense.numel()
    candidate = torch.zeros_like(dense, dtype=torch.bool)
    candidate[rows, cols] = True
    assert not (dense[~candidate] != 0).any()
    assert torch.equal(pairwise_iou_rotated(boxes1, boxes2), dense)


def test_chunked_culling_gives_the_same_candidates():
    boxes1, boxes2 = random_boxes(500, 8, extent=200.0), random_boxes(200, 9, extent=200.0)
    whole = set(zip(*(t.tolist() for t in overlap_candidates(boxes1, boxes2))))
    chunked = set(zip(*(t.tolist() for t in overlap_candidates(boxes1, boxes2, max_pairs=37))))
    assert len(whole) > 500 and whole == chunked


def test_candidates_within_one_set_are_its_unordered_pairs():
    boxes = random_boxes(400, 11, extent=200.0)
    boxes[1] = boxes[0]  # equal left edges: the pair may come twice, never missing
    both_ways = {(i, j) for i, j in zip(*(t.tolist() for t in overlap_candidates(boxes, boxes))) if i < j}
    within = {tuple(sorted(p)) for p in zip(*(t.tolist() for t in overlap_candidates_within(boxes, max_pairs=53)))}
    assert len(within) > 400 and within == both_ways


def test_empty_inputs():
    none, some = torch.zeros(0, 5), random_boxes(3, 10)
    assert pairwise_iou_rotated(none, some).shape == (0, 3)
    assert pairwise_iou_rotated(some, none).shape == (3, 0)
    assert matched_iou_rotated(none, none).shape == (0,)


def test_an_angle_outside_a_turn_is_the_same_box():
    box = torch.tensor([[50.0, 40.0, 30.0, 10.0, 30.0]])
    for angle in (390.0, -330.0, 30.0 + 720.0):
        other = box.clone()
        other[0, 4] = angle
        assert math.isclose(float(pairwise_iou_rotated(box, other)), 1.0, abs_tol=TOLERANCE)


@pytest.mark.parametrize("outer_first", [True, False])
def test_a_turned_box_inside_another_either_way(outer_first):
    """The small box at any angle well inside the large one: the IoU is the ratio of the areas,
    whether the large box's outline is the one clamped to the small box or the other way."""
    outer = random_boxes(300, 12, extent=100.0, min_size=30.0, max_size=60.0)
    inner = _local_shift(outer, 0.05, -0.05)
    inner[:, 2:4] = outer[:, 2:4].min(dim=1, keepdim=True).values * torch.tensor([0.5, 0.3])
    inner[:, 4] = random_boxes(300, 13)[:, 4]
    boxes1, boxes2 = (outer, inner) if outer_first else (inner, outer)
    ours = matched_iou_rotated(boxes1, boxes2).double().numpy()
    ratio = (inner[:, 2] * inner[:, 3]).double().numpy() / (outer[:, 2] * outer[:, 3]).double().numpy()
    assert np.abs(ours - ratio).max() <= TOLERANCE
    assert np.abs(ours - shapely_matched_iou(boxes1.double(), boxes2.double())).max() <= TOLERANCE
