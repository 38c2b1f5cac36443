"""
Anchor matching of rotated boxes: chunked, with the boxes culled by their enclosing boxes, it is
Detectron2's `Matcher` on the whole rotated IoU matrix; the ground truth is cleaned as
Detectron2's rotated data path cleans it.
"""
import pytest
import torch
from detectron2.modeling.anchor_generator import RotatedAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Instances, RotatedBoxes

from retina_plugin.modeling.matching import enclosing_boxes, label_anchors, match_anchors, sanitize_boxes
from retina_plugin.ops import pairwise_iou_rotated, rotated_box_corners

_SIZES = [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in (32, 64, 128, 256, 512)]


def _anchors(height, width, angles=(-60, -30, 0, 30, 60, 90)):
    """Rotated anchors of P3-P7 (9 x len(angles) per location) of an image, (R, 5)."""
    generator = RotatedAnchorGenerator(
        sizes=_SIZES, aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16, 32, 64, 128], angles=[list(angles)], offset=0.0
    )
    features = [torch.zeros(1, 1, -(-height // s), -(-width // s)) for s in (8, 16, 32, 64, 128)]
    return torch.cat([b.tensor for b in generator(features)])


def _rotated_boxes_with_ties(anchors, seed, n=30):
    """Random turned boxes, repeated boxes (ties between boxes), anchors themselves (IoU 1) and tiny boxes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 128
    sides = torch.rand(n, 2, generator=g) * 60 + 2
    angles = torch.rand(n, 1, generator=g) * 360 - 180
    boxes = torch.cat([centres, sides, angles], 1)
    picked = anchors[torch.randint(0, len(anchors), (6,), generator=g)]
    tiny = torch.cat([centres[:4], torch.full((4, 2), 0.7), angles[:4]], 1)  # best IoU far below the thresholds
    return torch.cat([boxes, boxes[:5], picked, picked[:2], tiny])


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])  # a second draw with the slow tests
@pytest.mark.parametrize("low_quality", [True, False])
def test_chunked_rotated_matching_equals_the_matcher_on_the_whole_matrix(seed, low_quality):
    anchors = RotatedBoxes(_anchors(96, 128, angles=(-45, 0, 45)))
    gt = RotatedBoxes(_rotated_boxes_with_ties(anchors.tensor, seed))
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=low_quality)
    expected_matches, expected_labels = matcher(pairwise_iou_rotated(gt.tensor, anchors.tensor))
    for pairs_per_chunk in (len(gt) * 300, len(gt) * 3000):  # chunks splitting locations, and levels
        matches, labels = match_anchors(gt, anchors, matcher, pairs_per_chunk=pairs_per_chunk)
        assert torch.equal(labels, expected_labels), pairs_per_chunk
        assert torch.equal(matches, expected_matches), pairs_per_chunk
    assert (expected_labels == -1).any() and (expected_labels == 1).sum() > 10  # every label occurs


def test_enclosing_boxes_hold_the_corners_exactly():
    g = torch.Generator().manual_seed(0)
    boxes = torch.cat([torch.rand(200, 2, generator=g) * 100, torch.rand(200, 2, generator=g) * 50, torch.rand(200, 1, generator=g) * 360 - 180], 1)
    corners = rotated_box_corners(boxes)  # (N, 4, 2)
    expected = torch.cat([corners.amin(dim=1), corners.amax(dim=1)], dim=1)
    assert torch.allclose(enclosing_boxes(boxes), expected, atol=1e-4)


def test_rotated_ground_truth_is_cleaned_as_detectron2_s_rotated_data_path_cleans_it():
    boxes = torch.tensor([
        [50.0, 40.0, 20.0, 10.0, 30.0],    # inside: kept as it is
        [5.0, 40.0, 30.0, 10.0, 0.5],      # near horizontal across the left edge: clipped (RotatedBoxes.clip)
        [5.0, 40.0, 30.0, 10.0, 30.0],     # turned across the edge: no one clipped rectangle, kept whole
        [50.0, 40.0, 20.0, 10.0, 210.0],   # an angle outside [-180, 180): the same rectangle, not clipped
        [50.0, 40.0, 0.0, 10.0, 10.0],     # zero width
        [float("nan"), 40.0, 20.0, 10.0, 0.0],
        [300.0, 40.0, 20.0, 10.0, 45.0],   # outside the image
    ])  # fmt: skip
    kept, keep, counts = sanitize_boxes(boxes, (80, 100))
    assert keep.tolist() == [True, True, True, True, False, False, False]
    assert counts == {"non-finite": 1, "degenerate": 1, "outside image": 1, "clipped": 1}
    assert torch.equal(kept[[0, 2, 3]], boxes[[0, 2, 3]])
    assert torch.allclose(kept[1], torch.tensor([10.0, 40.0, 20.0, 10.0, 0.5]))
    # float64 boxes (the dataset dicts' check) keep their precision: 0.1 is not a float32
    boxes64 = boxes.double() + torch.tensor([0.1, 0.1, 0.0, 0.0, 0.0], dtype=torch.float64)
    kept64, _, counts64 = sanitize_boxes(boxes64, (80, 100))
    assert kept64.dtype == torch.float64 and counts64 == counts and torch.equal(kept64[[0, 2, 3]], boxes64[[0, 2, 3]])


def test_a_horizontal_model_is_refused_rotated_ground_truth_in_one_line():
    gt = Instances((64, 64), gt_boxes=RotatedBoxes(torch.tensor([[20.0, 20.0, 10.0, 5.0, 30.0]])), gt_classes=torch.tensor([0]))
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    with pytest.raises(ValueError, match="ground-truth boxes of 5 numbers \\(RotatedBoxes\\) for a model whose anchors have 4"):
        label_anchors(anchors, [gt], Matcher([0.4, 0.5], [0, -1, 1]), num_classes=3)
