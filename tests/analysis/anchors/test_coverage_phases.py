"""
The phases of match_boxes_to_anchors, each on a grid small enough to count by hand: two
levels, strides 16 and 32, one square anchor per location (32 px, then 64 px), centres at
16 i and 32 i (offset 0), a 256 x 256 image (16 x 16 and 8 x 8 locations).
"""
import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou

from retina_plugin.analysis.anchors.anchor_coverage import (
    MatchTotals,
    anchor_layout,
    candidate_windows,
    chunk_pairs,
    chunk_sizes,
    match_boxes_to_anchors,
    matcher_positives,
    positives_per_box,
)
from retina_plugin.analysis.anchors.anchor_settings import AnchorGrid

IMAGE = (256, 256)
# Four 32 px boxes, each exactly the P3 anchor of a location: (5, 5), (10, 5), (5, 10), (10, 10).
BOXES = torch.tensor([[64.0, 64, 96, 96], [144, 64, 176, 96], [64, 144, 96, 176], [144, 144, 176, 176]])


@pytest.fixture(scope="module")
def grid():
    generator = DefaultAnchorGenerator(sizes=[[32.0], [64.0]], aspect_ratios=[[1.0]], strides=[16, 32], offset=0.0)
    return AnchorGrid(generator, ["a", "b"], [16, 32], [None, None])


def test_layout_counts_every_location(grid):
    layout = anchor_layout(grid, IMAGE)
    assert layout.sizes == [(16, 16), (8, 8)]
    assert len(layout.anchors) == 16 * 16 + 8 * 8 and layout.first == [0, 256]
    assert layout.level.bincount().tolist() == [256, 64]
    assert layout.anchors[5 * 16 + 5].tolist() == [64.0, 64.0, 96.0, 96.0]  # location (x 5, y 5) of level a


def test_windows_hold_the_locations_that_can_overlap(grid):
    windows = candidate_windows(BOXES, grid, anchor_layout(grid, IMAGE).sizes, fg_threshold=0.5)
    x0, nx, y0, ny = windows[0]
    # Level a: anchors 16 px either side of a centre 16 i overlap (or touch) [64, 96] for i = 3..7.
    assert x0.tolist() == [3, 8, 3, 8] and y0.tolist() == [3, 3, 8, 8]
    assert nx.tolist() == [5] * 4 and ny.tolist() == [5] * 4
    # Level b: a centred 64 px anchor has IoU 32^2 / 64^2 = 0.25 with a box, below the reach
    # (every box has IoU 1 somewhere, so reach is the foreground threshold 0.5): no pair there.
    assert windows[1][1].tolist() == [0] * 4


def test_chunks_split_at_multiples_of_the_pair_budget(grid):
    windows = candidate_windows(BOXES, grid, anchor_layout(grid, IMAGE).sizes, fg_threshold=0.5)
    # 25 pairs per box: pairs before each box 0, 25, 50, 75.
    assert chunk_sizes(windows, grid.level_cell_anchors, 50) == [2, 2]
    assert chunk_sizes(windows, grid.level_cell_anchors, 10) == [1, 1, 1, 1]
    assert chunk_sizes(windows, grid.level_cell_anchors, 1000) == [4]


def test_chunk_pairs_are_the_window_locations(grid):
    layout = anchor_layout(grid, IMAGE)
    windows = candidate_windows(BOXES, grid, layout.sizes, fg_threshold=0.5)
    box_idx, anchor_idx = chunk_pairs(windows, layout, grid.level_cell_anchors, 1, 3)
    assert box_idx.tolist() == [1] * 25 + [2] * 25
    expected = [y * 16 + x for y in range(3, 8) for x in range(8, 13)] + [y * 16 + x for y in range(8, 13) for x in range(3, 8)]
    assert anchor_idx.tolist() == expected


def test_totals_keep_each_box_best_and_each_anchor_best(grid):
    layout = anchor_layout(grid, IMAGE)
    windows = candidate_windows(BOXES, grid, layout.sizes, fg_threshold=0.5)
    totals = MatchTotals(len(BOXES), layout, 2, fg_threshold=0.5)
    for start in range(4):  # one box per chunk
        box_idx, anchor_idx = chunk_pairs(windows, layout, grid.level_cell_anchors, start, start + 1)
        iou = matched_pairwise_iou(Boxes(BOXES[box_idx]), Boxes(layout.anchors[anchor_idx]))
        totals.add(box_idx, anchor_idx, iou, start, start + 1)
    assert totals.best_iou.tolist() == [1.0] * 4
    assert totals.best_index.tolist() == [5 * 16 + 5, 5 * 16 + 10, 10 * 16 + 5, 10 * 16 + 10]
    # Neighbours 16 px off have IoU 16 * 32 / (2 * 32^2 - 16 * 32) = 1/3 < 0.5: one fg anchor per box.
    assert totals.num_fg.view(4, 2).tolist() == [[1, 0]] * 4
    assert totals.low_quality.sum() == 4 and (totals.anchor_max > 0).sum() == 4 * 9  # 3 x 3 overlapping each
    assert totals.anchor_match[totals.best_index].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("low_quality, best, expected, everything", [
    (True, [0.3], [True, False, True, True], False),  # IoU 0.5 and 0.9, and the low-quality match
    (False, [0.3], [False, False, True, True], False),
    (True, [0.3, 0.0], [True] * 4, True),  # a box of best IoU 0 ties with every anchor
])  # fmt: skip
def test_matcher_positives(low_quality, best, expected, everything):
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=low_quality)
    anchor_max = torch.tensor([0.3, 0.45, 0.5, 0.9])
    positive, every = matcher_positives(anchor_max, torch.tensor([True, False, False, False]), torch.tensor(best), matcher)
    assert positive.tolist() == expected and every == everything


def test_positives_per_box_count_by_level():
    positive = torch.tensor([True, True, False, True, True])
    anchor_match = torch.tensor([0, 1, 1, 1, 0])
    level = torch.tensor([0, 0, 0, 1, 1])
    assert positives_per_box(positive, anchor_match, level, 2, 2).tolist() == [[1, 1], [1, 1]]


def test_the_phases_together(grid):
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    result = match_boxes_to_anchors(BOXES, grid, IMAGE, matcher, 0.5)
    assert result["best_iou"].tolist() == [1.0] * 4 and result["best_level"].tolist() == [0] * 4
    assert result["num_positive"].tolist() == [[1, 0]] * 4 and not result["every_anchor_positive"]
