"""TIDE error types, the AP each fix gives, and the confusion matrix, on the hand-built case."""
import numpy as np
import pytest

from retina_plugin.analysis.detections import ERROR_TYPES, analyse_results, detections_from_list, ground_truth_from_coco
from retina_plugin.analysis.detections.confusion import confusion_matrix
from retina_plugin.analysis.detections.detection_data import evaluate, image_ious
from retina_plugin.analysis.detections.tide import classify_errors, fixed_ap
from test_results_case import (
    CONFUSION, DETECTIONS, ERROR_COUNTS, FIXED_AP50_SUMS, NUM_GT, THRESHOLDS, coco_gt, coco_results,
)  # fmt: skip


@pytest.fixture(scope="module")
def case():
    gt = ground_truth_from_coco(coco_gt())
    dets = detections_from_list(coco_results(), gt)
    ious = image_ious(gt, dets)
    matches = evaluate(gt, dets, [0.5]).matches(0.5)
    return gt, dets, ious, matches, classify_errors(gt, dets, ious, matches)


def test_each_detection_gets_its_error_type(case):
    gt, dets, _, matches, errors = case
    expected = {(i, c, s): kind for i, c, _, s, kind in DETECTIONS}
    for n in range(len(dets)):
        key = (gt.image_ids[dets.image[n]], gt.category_ids[dets.cls[n]], dets.scores[n])
        kind = "tp" if matches.det_tp[n] else ERROR_TYPES[errors.det_error[n]]
        assert kind == expected[key], key
    # The missed boxes: the second bird and the cat of image 3.
    missed = np.flatnonzero(errors.gt_missed)
    missed = [(gt.image_ids[gt.image[j]], gt.class_names[gt.cls[j]], gt.boxes[j].tolist()) for j in missed]
    assert missed == [(3, "bird", [150, 30, 40, 40]), (3, "cat", [100, 150, 40, 40])]


def test_error_counts_and_fixed_ap(case):
    gt, dets, _, matches, errors = case
    a = analyse_results(gt, dets)
    summary = a.error_summary
    assert {n: e["count"] for n, e in summary["errors"].items()} == ERROR_COUNTS
    base = FIXED_AP50_SUMS[None] / 303
    assert fixed_ap(gt, dets, matches, errors) == pytest.approx(base, rel=1e-9)
    assert summary["ap"] == pytest.approx(100 * base, rel=1e-9)
    for name in ERROR_TYPES:
        fixed = FIXED_AP50_SUMS[name] / 303
        assert fixed_ap(gt, dets, matches, errors, name) == pytest.approx(fixed, rel=1e-9), name
        assert summary["errors"][name]["delta_ap"] == pytest.approx(100 * (fixed - base), rel=1e-9), name


def test_a_second_cls_error_on_the_same_box_is_dropped_when_fixed():
    """As tidecv's BestGTMatch: one box turns one error (the best-scoring) into a true positive."""
    gt = ground_truth_from_coco(coco_gt())
    results = coco_results() + [{"image_id": 1, "category_id": 3, "bbox": [100, 100, 40, 40], "score": 0.5}]
    dets = detections_from_list(results, gt)
    ious = image_ious(gt, dets)
    matches = evaluate(gt, dets, [0.5]).matches(0.5)
    errors = classify_errors(gt, dets, ious, matches)
    cls_errors = np.flatnonzero(errors.det_error == ERROR_TYPES.index("cls"))
    assert dets.scores[cls_errors].tolist() == [0.9, 0.5]
    assert errors.det_fixable[cls_errors].tolist() == [True, False]
    assert len(set(errors.det_target[cls_errors].tolist())) == 1
    # Fixing drops bird .50, which ranks below the bird TP: the same AP as without it.
    assert fixed_ap(gt, dets, matches, errors, "cls") == pytest.approx(FIXED_AP50_SUMS["cls"] / 303, rel=1e-9)


def test_confusion_matrix(case):
    gt, dets, ious, matches, _ = case
    matrix = confusion_matrix(gt, dets, ious, matches, np.array(THRESHOLDS))
    assert matrix.tolist() == CONFUSION
    assert matrix[:-1].sum(axis=1).tolist() == NUM_GT
    # With no detection kept, every box is missed; with all kept, still one row sum per class.
    assert confusion_matrix(gt, dets, ious, matches, np.full(3, 1.0))[:-1, -1].tolist() == NUM_GT
    everything = confusion_matrix(gt, dets, ious, matches, np.zeros(3))
    assert everything[:-1].sum(axis=1).tolist() == NUM_GT and everything[:, :-1].sum() == len(DETECTIONS)
