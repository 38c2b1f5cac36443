"""
Detectron2's RotatedCOCOEvaluator without its compiled ops (retina_plugin.evaluation:
RotatedCOCOEvaluator, RotatedCOCOeval, and evaluate_boxes on XYWHA boxes).

The hand-built case: one image, one class, two boxes A (50, 50, 40, 20, 30) and
B (150, 80, 40, 20, -60); detections .9 on A exactly (IoU 1), .8 B slid along its width by
0.2 w (IoU 0.8 / 1.2 = 2/3), .7 far from both (a false positive). At IoU thresholds .50-.65
the first two are true positives: precision 1 up to recall 1, AP 1. At .70-.95 only the
first: precision 1 at the 51 recall points 0..0.5 of COCO's 101, AP 51/101. So
AP50 = 100, AP75 = 100 * 51/101 and AP = 100 * (4 + 6 * 51/101) / 10 = 100 * 710/1010.
"""
import contextlib
import importlib
import io
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.rotated_coco_evaluation import RotatedCOCOeval as D2RotatedCOCOeval
from detectron2.structures import BoxMode, Instances, RotatedBoxes

from coco_sets import arrays, coco, generated_set
from retina_plugin.evaluation import (
    COCO_IOU_THRESHOLDS, DetectedBoxes, GroundTruthBoxes, RotatedCOCOEvaluator, RotatedCOCOeval, box_iou,
    evaluate_boxes,
)  # fmt: skip

A, B = (50.0, 50.0, 40.0, 20.0, 30.0), (150.0, 80.0, 40.0, 20.0, -60.0)


def slid(box, fraction):
    """`box` moved along its own width axis (cos a, -sin a) by `fraction` of its width."""
    cx, cy, w, h, a = box
    d = fraction * w
    return (cx + d * math.cos(math.radians(a)), cy - d * math.sin(math.radians(a)), w, h, a)


DETECTIONS = [(A, 0.9), (slid(B, 0.2), 0.8), ((250.0, 250.0, 30.0, 10.0, 45.0), 0.7)]
EXPECTED = {"AP": 100 * 710 / 1010, "AP50": 100.0, "AP75": 100 * 51 / 101}


def _register(name="rotated_coco_hand_built_case"):
    if name not in DatasetCatalog.list():
        anns = [{"bbox": list(box), "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0, "iscrowd": 0} for box in (A, B)]
        DatasetCatalog.register(name, lambda: [{"file_name": "a.png", "image_id": 7, "height": 300, "width": 300,
                                                "annotations": anns}])  # fmt: skip
        MetadataCatalog.get(name).set(thing_classes=["ship"])
    return name


def test_ious_of_the_hand_built_case():
    dets = np.array([box for box, _ in DETECTIONS])
    np.testing.assert_allclose(box_iou(dets, np.array([A, B]), [False, False]), [[1, 0], [0, 2 / 3], [0, 0]],
                               rtol=0, atol=1e-6)  # fmt: skip


def evaluator_results(name, output_dir, use_fast_impl=True):
    """RotatedCOCOEvaluator on the hand-built case's detections: its "bbox" results and what it printed."""
    evaluator = RotatedCOCOEvaluator(name, output_dir=str(output_dir), use_fast_impl=use_fast_impl)
    evaluator.reset()
    instances = Instances((300, 300))
    instances.pred_boxes = RotatedBoxes(torch.tensor([box for box, _ in DETECTIONS], dtype=torch.float32))
    instances.scores = torch.tensor([score for _, score in DETECTIONS])
    instances.pred_classes = torch.zeros(len(DETECTIONS), dtype=torch.int64)
    evaluator.process([{"image_id": 7}], [{"instances": instances}])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = evaluator.evaluate()["bbox"]
    return results, printed.getvalue()


def test_rotated_coco_evaluator_on_the_hand_built_case(tmp_path):
    results, _ = evaluator_results(_register(), tmp_path)
    for key, value in EXPECTED.items():
        assert results[key] == pytest.approx(value, abs=1e-6), key
    assert (tmp_path / "coco_instances_results.json").exists()


def test_crowd_rotated_box_covers_the_detections_inside_it():
    """COCOeval's crowd IoU, intersection / detection area: 1 for a detection inside a crowd box."""
    crowd, inside = (100, 100, 80, 40, 30), (100, 100, 20, 10, 30)
    ious = box_iou(np.array([inside]), np.array([crowd, crowd]), [True, False])
    np.testing.assert_allclose(ious, [[1.0, 200 / 3200]], rtol=0, atol=1e-6)


def _rotated_about_centre(boxes, angle, centre=500.0):
    """XYWH boxes (N, 4) as XYWHA boxes of the whole scene turned by `angle` degrees about (centre, centre)."""
    xywha = BoxMode.convert(np.asarray(boxes, np.float64).reshape(-1, 4), BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
    t = math.radians(angle)
    dx, dy = xywha[:, 0] - centre, xywha[:, 1] - centre
    # Detectron2's counter-clockwise angle in image coordinates (y down) turns (1, 0) to (cos, -sin).
    xywha[:, 0] = centre + dx * math.cos(t) + dy * math.sin(t)
    xywha[:, 1] = centre - dx * math.sin(t) + dy * math.cos(t)
    xywha[:, 4] = angle
    return xywha


@pytest.mark.parametrize("angle", [0.0, 30.0, -75.0])
def test_a_turned_scene_evaluates_as_the_axis_aligned_one(angle):
    """
    coco_sets' generated set (crowd boxes, every area range, maxDets cut off, an empty class)
    turned as a whole about the image centre: IoUs are unchanged, so COCOeval's matches and
    precision arrays by rotated IoU equal pycocotools' on the axis-aligned boxes.
    """
    gt, dets, num_images, num_classes = arrays(*generated_set())
    reference = evaluate_boxes(gt, dets, num_images, num_classes, COCO_IOU_THRESHOLDS, max_dets=100)
    turned_gt = GroundTruthBoxes(gt.image, gt.label, _rotated_about_centre(gt.boxes, angle), gt.crowd)
    turned_dets = DetectedBoxes(dets.image, dets.label, _rotated_about_centre(dets.boxes, angle), dets.scores)
    turned = evaluate_boxes(turned_gt, turned_dets, num_images, num_classes, COCO_IOU_THRESHOLDS, max_dets=100)
    np.testing.assert_array_equal(turned.det_gt, reference.det_gt)
    np.testing.assert_array_equal(turned.det_ignored, reference.det_ignored)
    np.testing.assert_array_equal(turned.gt_matched, reference.gt_matched)
    np.testing.assert_allclose(turned.precision, reference.precision, rtol=0, atol=1e-12)
    assert turned.mean_ap() == pytest.approx(reference.mean_ap(), abs=1e-12) and reference.mean_ap() > 0.1


def _d2_ops_load():
    try:
        importlib.import_module("detectron2._C")
        return True, ""
    except (ImportError, OSError) as e:
        return False, f"detectron2._C does not load here ({e}); its pairwise_iou_rotated cannot run"


@pytest.mark.skipif(not _d2_ops_load()[0], reason=_d2_ops_load()[1])
def test_equal_to_detectron2s_rotated_cocoeval_where_its_ops_load():
    gt_dict, results = generated_set()
    gt, dets, _, _ = arrays(gt_dict, results)
    gt_dict["annotations"] = [dict(a, bbox=b.tolist(), iscrowd=0)
                              for a, b in zip(gt_dict["annotations"], _rotated_about_centre(gt.boxes, 30))]  # fmt: skip
    results = [dict(r, bbox=b.tolist()) for r, b in zip(results, _rotated_about_centre(dets.boxes, 30))]
    stats = []
    for cls in (RotatedCOCOeval, D2RotatedCOCOeval):
        coco_gt = coco(gt_dict)
        with contextlib.redirect_stdout(io.StringIO()):
            ev = cls(coco_gt, coco_gt.loadRes([dict(r) for r in results]), iouType="bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats.append(ev.stats)
    np.testing.assert_allclose(stats[0], stats[1], rtol=0, atol=1e-5)
