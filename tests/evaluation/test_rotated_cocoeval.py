"""
The rotated COCOeval on faster-coco-eval's C++ matching (cocoeval.py's `CompiledRotatedCOCOeval`,
its IoUs from rotated_cocoeval.py's `RotatedIoU`) against pycocotools' `RotatedCOCOeval`: the 12
stats, eval's arrays, the printed summary and evaluate_boxes' per-detection matches on coco_sets'
`rotated_set` (crowd boxes, every area range, 4 classes, one without ground truth, an image beyond
maxDets 100, XYWH ground truth facing XYWHA detections); the hand-built case through
RotatedCOCOEvaluator; without faster-coco-eval, pycocotools' runs and says so once.
"""
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from coco_sets import arrays, assert_same_matches, coco, rotated_set
from retina_plugin.evaluation import (
    COCO_IOU_THRESHOLDS, RotatedCOCOeval, cocoeval_class, cocoeval_name, evaluate_boxes,
)  # fmt: skip
from retina_plugin.evaluation.box_iou import grouped_rotated_box_iou, rotated_box_iou
from retina_plugin.evaluation.cocoeval import is_compiled
from test_rotated_coco_evaluator import EXPECTED, _register, evaluator_results

REPO = Path(__file__).resolve().parents[2]
ULP_AT_1 = 2.3e-16  # float64 spacing below 1.0: C++ and numpy sums round the last bit apart
NUM_IMAGES = 200


def summary_lines(printed: str):
    return [line for line in printed.splitlines() if line.startswith(" Average")]


def cocoeval_run(cls, gt_dict, results, max_dets):
    """evaluate, accumulate, summarize of COCOeval class `cls` on the COCO dicts: (the COCOeval, summary lines)."""
    coco_gt, printed = coco(gt_dict), io.StringIO()
    with contextlib.redirect_stdout(printed):
        ev = cls(coco_gt, coco_gt.loadRes([dict(r) for r in results]), iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev, summary_lines(printed.getvalue())


def test_the_rotated_cocoeval_is_compiled_unless_asked_otherwise():
    for max_dets in (100, 300):
        compiled, fallback = cocoeval_class(True, max_dets, rotated=True), cocoeval_class(False, max_dets, rotated=True)
        assert is_compiled(compiled) and cocoeval_name(compiled).startswith("faster-coco-eval ")
        assert issubclass(fallback, RotatedCOCOeval) and cocoeval_name(fallback).startswith("pycocotools ")
    assert cocoeval_class(max_dets=300, rotated=True).__name__ == "CompiledRotatedCOCOevalMaxDets"
    assert not issubclass(cocoeval_class(), RotatedCOCOeval) and cocoeval_class() is not cocoeval_class(rotated=True)


@pytest.mark.parametrize("broadcast_pairs", [None, 100], ids=["broadcast-culling", "sorted-culling-above-100-pairs"])
def test_grouped_iou_is_rotated_box_iou_of_each_group(broadcast_pairs, monkeypatch):
    """
    One exact IoU of all groups' culled pairs gives each group's matrix bit for bit, crowd boxes and
    empty groups too; with the groups above 100 pairs culled by ops' overlap_candidates as well.
    """
    if broadcast_pairs:  # the module (the package's `box_iou` is its function)
        monkeypatch.setattr(sys.modules["retina_plugin.evaluation.box_iou"], "BROADCAST_PAIRS", broadcast_pairs)
    rng = np.random.default_rng(0)
    groups = []
    for n, m in [(7, 5), (0, 3), (4, 0), (30, 40), (1, 1), (12, 9)]:
        gt = np.c_[rng.uniform(0, 200, (m, 2)), rng.uniform(5, 80, (m, 2)), rng.uniform(-180, 180, m)]
        near = gt[rng.integers(0, max(m, 1), n)] if m else np.zeros((n, 5))
        det = near + rng.normal(0, 1, (n, 5)) * [5, 5, 5, 5, 10]
        det[:, 2:4] = np.abs(det[:, 2:4]) + 1
        groups.append((det, gt, rng.random(m) < 0.2))
    grouped = grouped_rotated_box_iou(*zip(*groups))
    assert sum(((g > 0.5) & (g < 1)).sum() for g in grouped) > 20  # overlapping pairs, not only zeros
    for (det, gt, crowd), ious in zip(groups, grouped):
        np.testing.assert_array_equal(ious, rotated_box_iou(det, gt, crowd))


@pytest.mark.parametrize("max_dets", [100, 300])
def test_stats_arrays_and_summary_are_pycocotools(max_dets):
    """The set with XYWH ground truth in every 7th image (facing XYWHA detections, taken at angle 0)."""
    gt_dict, results = rotated_set(num_images=NUM_IMAGES)
    ref, ref_lines = cocoeval_run(cocoeval_class(False, max_dets, rotated=True), gt_dict, results, max_dets)
    fast, fast_lines = cocoeval_run(cocoeval_class(True, max_dets, rotated=True), gt_dict, results, max_dets)
    assert type(fast).__name__.startswith("CompiledRotatedCOCOeval") and type(ref).__name__.startswith("RotatedCOCOeval")
    assert len(ref.stats) == 12 and ref.stats[0] > 0.1 and ref.stats[11] > 0.1
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=ULP_AT_1)
    np.testing.assert_allclose(fast.eval["precision"], ref.eval["precision"], rtol=0, atol=ULP_AT_1)
    np.testing.assert_array_equal(fast.eval["recall"], ref.eval["recall"])
    np.testing.assert_array_equal(fast.eval["scores"], ref.eval["scores"])
    assert fast_lines == ref_lines and len(ref_lines) == 12


@pytest.mark.parametrize("xywh_every", [0, 1], ids=["xywha-ground-truth", "xywh-ground-truth"])
def test_evaluate_boxes_matches_are_pycocotools(xywh_every):
    """Every per-detection and per-box array of evaluate_boxes on rotated detections, at COCO's IoUs and others."""
    gt, dets, num_images, num_classes = arrays(*rotated_set(num_images=NUM_IMAGES, xywh_every=xywh_every))
    assert dets.boxes.shape[1] == 5 and gt.boxes.shape[1] == (4 if xywh_every else 5)
    thresholds = np.r_[COCO_IOU_THRESHOLDS, 0.1, 0.4]
    ref, fast = (
        evaluate_boxes(gt, dets, num_images, num_classes, thresholds, None, ("all", "small", "medium", "large"), use)
        for use in (False, True)
    )  # fmt: skip
    assert_same_matches(fast, ref, precision_atol=ULP_AT_1)
    # the set has what is checked: crowd matches, unmatched boxes, a class without ground truth, 150 detections in image 1
    assert (ref.det_ignored[0] & (ref.det_gt[0] >= 0)).sum() > 10 and (~ref.gt_matched[0]).sum() > 10
    assert (ref.det_gt[0] >= 0).sum() > 500 and ref.num_gt[-1] == 0 and ref.max_dets >= 150


def test_rotated_coco_evaluator_on_the_hand_built_case_either_way(tmp_path):
    # registered afresh: the evaluator caches the COCO json in an output_dir that pytest removes after its test
    name = "rotated_coco_hand_built_case_either_way"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    _register(name)
    (ref, ref_printed), (fast, fast_printed) = (evaluator_results(name, tmp_path / str(use), use) for use in (False, True))
    ref_lines, fast_lines = summary_lines(ref_printed), summary_lines(fast_printed)
    assert list(fast) == list(ref) and fast_lines == ref_lines and len(ref_lines) == 12
    for key, value in EXPECTED.items():
        assert ref[key] == pytest.approx(value, abs=1e-6) and fast[key] == pytest.approx(ref[key], abs=1e-12), key


FALLBACK = """
import contextlib, io, sys
sys.modules["faster_coco_eval"] = None  # a real ImportError, as where it is not installed
from coco_sets import arrays, coco, rotated_set
from retina_plugin.evaluation import cocoeval_class, cocoeval_name, evaluate_boxes
gt_dict, results = rotated_set(num_images=60)
cls = cocoeval_class(rotated=True)
print(cls.__name__, cocoeval_name(cls), cocoeval_class(max_dets=300, rotated=True).__name__)
print(evaluate_boxes(*arrays(*rotated_set(num_images=60, xywh_every=0))).mean_ap())
coco_gt = coco(gt_dict)
with contextlib.redirect_stdout(io.StringIO()):
    ev = cls(coco_gt, coco_gt.loadRes(results), iouType="bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(*ev.stats)
"""


def test_without_faster_coco_eval_pycocotools_runs_and_says_so_once():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    proc = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names, mean_ap, stats = proc.stdout.splitlines()[-3:]
    assert names.startswith("RotatedCOCOeval pycocotools ") and names.endswith(" RotatedCOCOevalMaxDets")
    notices = [line for line in proc.stderr.splitlines() if "faster-coco-eval" in line]
    assert len(notices) == 1 and "pip install faster-coco-eval" in notices[0], proc.stderr[-3000:]
    compiled_ap = evaluate_boxes(*arrays(*rotated_set(num_images=60, xywh_every=0))).mean_ap()
    assert float(mean_ap) == pytest.approx(compiled_ap, abs=ULP_AT_1) and compiled_ap > 0.1
    compiled, _ = cocoeval_run(cocoeval_class(rotated=True), *rotated_set(num_images=60), 100)
    np.testing.assert_allclose([float(s) for s in stats.split()], compiled.stats, rtol=0, atol=ULP_AT_1)
