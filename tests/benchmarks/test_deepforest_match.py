"""
benchmarks/deepforest_match.py's greedy matching gives COCOeval's matches (pycocotools' and
faster-coco-eval's, through retina_plugin.evaluation) on small random images: overlapping
detections, equal scores and duplicate reference boxes (equal IoUs), at IoU 0.4 and 0.5.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from retina_plugin.evaluation.coco_matching import DetectedBoxes, GroundTruthBoxes, evaluate_boxes

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("deepforest_match", REPO / "benchmarks" / "deepforest_match.py")
deepforest_match = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deepforest_match)


def _xywh(boxes):
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def cocoeval_matches(boxes, scores, reference, iou, fast):
    """COCOeval's (det_ref, ref_matched) for one image and class."""
    gt = GroundTruthBoxes(np.zeros(len(reference), np.int64), np.zeros(len(reference), np.int64), _xywh(reference),
                          np.zeros(len(reference), bool))  # fmt: skip
    dets = DetectedBoxes(np.zeros(len(boxes), np.int64), np.zeros(len(boxes), np.int64), _xywh(boxes), scores)
    matches = evaluate_boxes(gt, dets, 1, 1, [iou], max_dets=max(len(boxes), 1), use_fast_impl=fast).matches(iou)
    return matches.det_gt, matches.gt_matched


def random_case(seed):
    """Reference boxes of 10-30 px in a 120 px image (some duplicated), detections jittered around them and at random."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 25))
    xy = rng.uniform(0, 100, (count, 2))
    reference = np.concatenate([xy, xy + rng.uniform(10, 30, (count, 2))], axis=1)
    reference = np.concatenate([reference, reference[rng.integers(0, count, count // 4)]])  # equal IoUs
    near = reference[rng.integers(0, len(reference), 2 * len(reference))] + rng.normal(0, 4, (2 * len(reference), 4))
    xy = rng.uniform(0, 100, (5, 2))
    far = np.concatenate([xy, xy + rng.uniform(5, 30, (5, 2))], axis=1)
    boxes = np.concatenate([near, far])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = np.round(rng.uniform(0.05, 1, len(boxes)), 1)  # equal scores: COCOeval keeps their order
    return boxes, scores, reference


@pytest.mark.parametrize("fast", [False, True], ids=["pycocotools", "faster-coco-eval"])
def test_greedy_match_is_cocoevals_matching(fast):
    contested = 0
    for seed in range(40):
        boxes, scores, reference = random_case(seed)
        for iou in (0.4, 0.5):
            det_ref, ref_matched = deepforest_match.greedy_match(boxes, scores, reference, iou)
            want_det, want_ref = cocoeval_matches(boxes, scores, reference, iou, fast)
            assert det_ref.tolist() == want_det.tolist(), (seed, iou)
            assert ref_matched.tolist() == want_ref.tolist(), (seed, iou)
            contested += int((det_ref < 0).sum())
    # The cases matter: many detections found their reference box taken or none near enough.
    assert contested > 200


def test_greedy_match_rules():
    reference = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]], np.float64)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 14]], np.float64)
    det_ref, ref_matched = deepforest_match.greedy_match(boxes, [0.5, 0.9, 0.5, 0.7], reference, 0.4)
    # 0.9 first takes the later of two equal boxes; the first 0.5 the other; the second 0.5 none is left.
    assert det_ref.tolist() == [0, 1, -1, 2]
    assert ref_matched.tolist() == [True, True, True]
    # IoU 10/14 = 0.714: below 0.75 no match, at it (inclusive) one.
    assert deepforest_match.greedy_match(boxes[3:], [1.0], reference, 0.75)[0].tolist() == [-1]
    assert deepforest_match.greedy_match(boxes[3:], [1.0], reference, 10 / 14)[0].tolist() == [2]
    empty = deepforest_match.greedy_match(np.zeros((0, 4)), [], reference, 0.4)
    assert empty[0].tolist() == [] and empty[1].tolist() == [False] * 3
