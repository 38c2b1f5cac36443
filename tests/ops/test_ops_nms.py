"""
nms_rotated and batched_nms_rotated (retina_plugin.ops) against a greedy loop over shapely's
IoU: random clustered sets with many equal scores and several classes, duplicates, a long chain
of neighbours (the worst case of the sweep), and no boxes.
"""
import functools

import pytest
import torch

from retina_plugin.ops import batched_nms_rotated, nms_rotated
from shapely_rotated import random_boxes, reference_nms, shapely_pairwise_iou


@functools.lru_cache(maxsize=None)
def _clustered(n, seed, clusters=16):
    """n boxes around `clusters` centres, scores on a coarse grid (many ties), 3 classes, and
    shapely's (n, n) IoU of the boxes."""
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, seed, extent=12.0, min_size=8.0, max_size=30.0)
    centres = torch.rand(clusters, 2, generator=g) * 300
    boxes[:, :2] += centres[torch.randint(clusters, (n,), generator=g)]
    scores = torch.randint(0, 8, (n,), generator=g).float() / 8
    classes = torch.randint(0, 3, (n,), generator=g)
    return boxes, scores, classes, shapely_pairwise_iou(boxes.double(), boxes.double())


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_is_the_greedy_loop(seed, threshold):
    boxes, scores, _, iou = _clustered(200, seed)
    kept = nms_rotated(boxes, scores, threshold)
    assert kept.dtype == torch.int64
    expected = reference_nms(iou, scores, [0] * len(scores), threshold)
    assert 5 < len(expected) < len(scores)
    assert kept.tolist() == expected


@pytest.mark.parametrize("threshold", [0.2, 0.5])
def test_batched_nms_is_the_greedy_loop_per_class(threshold):
    boxes, scores, classes, iou = _clustered(200, 2)
    kept = batched_nms_rotated(boxes, scores, classes, threshold)
    expected = reference_nms(iou, scores, classes, threshold)
    assert kept.tolist() == expected
    assert len(expected) > len(reference_nms(iou, scores, [0] * 200, threshold))


def test_equal_boxes_and_scores_keep_the_first():
    box = torch.tensor([[40.0, 30.0, 20.0, 8.0, 33.0]])
    boxes = torch.cat([box, box + torch.tensor([200.0, 0, 0, 0, 0]), box, box])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9])
    assert nms_rotated(boxes, scores, 0.5).tolist() == [3, 1]
    assert batched_nms_rotated(boxes, scores, torch.tensor([1, 1, 2, 1]), 0.5).tolist() == [3, 1, 2]


def test_a_long_chain_keeps_every_other_box():
    """Each box overlaps only its neighbours and scores fall along the chain: the greedy result
    alternates, the case where each sweep settles one more box."""
    n = 400
    boxes = torch.tensor([[10.0 * i, 50.0, 16.0, 6.0, 0.0] for i in range(n)])
    scores = torch.linspace(1, 0.1, n)
    assert nms_rotated(boxes, scores, 0.2).tolist() == list(range(0, n, 2))


def test_the_threshold_is_strict_and_nothing_is_empty():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0], [5.0, 0.0, 10.0, 10.0, 0.0]])  # IoU 1/3
    scores = torch.tensor([0.9, 0.8])
    assert nms_rotated(boxes, scores, 0.34).tolist() == [0, 1]
    assert nms_rotated(boxes, scores, 0.33).tolist() == [0]
    none = nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert none.dtype == torch.int64 and none.shape == (0,)
    assert batched_nms_rotated(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)
