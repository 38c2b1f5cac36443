"""Per-class AP, PR curves and best-F1 thresholds of retina_plugin.analysis.results against pycocotools."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina_plugin.analysis.results import analyse_results, detections_from_list, ground_truth_from_coco
from test_results_case import AP50, NAMES, NUM_GT, THRESHOLDS, coco_gt, coco_results


def cocoeval(gt_dict, results):
    """COCOeval's precision array (T, R, K) for area 'all' and 100 detections."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, :, 0, -1]


def per_class_ap(precision):
    """(K,) AP .50:.95, AP50, AP75 in percent as Detectron2's COCOEvaluator; NaN without ground truth."""
    def mean(p):
        per_class = [p[..., k][p[..., k] > -1] for k in range(p.shape[-1])]
        return np.array([v.mean() if len(v) else np.nan for v in per_class])
    return 100 * mean(precision), 100 * mean(precision[0]), 100 * mean(precision[5])


def test_hand_built_case_ap_and_thresholds():
    gt = ground_truth_from_coco(coco_gt())
    a = analyse_results(gt, detections_from_list(coco_results(), gt))
    assert a.class_names == NAMES and a.num_gt.tolist() == NUM_GT
    assert a.ap50 == pytest.approx(100 * np.array(AP50), abs=1e-9)
    precision = cocoeval(coco_gt(), coco_results())
    ap, ap50, ap75 = per_class_ap(precision)
    assert a.ap == pytest.approx(ap, abs=1e-9) and a.ap50 == pytest.approx(ap50, abs=1e-9)
    assert a.ap75 == pytest.approx(ap75, abs=1e-9)
    # The PR curves are COCOeval's interpolated precisions.
    assert a.pr50 == pytest.approx(precision[0].T, abs=1e-12)
    assert a.pr75 == pytest.approx(precision[5].T, abs=1e-12)
    assert a.threshold.tolist() == THRESHOLDS
    assert a.precision == pytest.approx([0.5, 0.5, 0.5]) and a.recall == pytest.approx([2 / 3, 1 / 2, 1 / 3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_results_ap_equals_cocoeval(seed):
    """Random boxes, crowd boxes, a class without ground truth, 120 detections in one image (cut at 100)."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"{i}.png", "height": 200, "width": 200} for i in (3, 7, 11, 12, 20)]
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 5, 9)]
    anns, results = [], []
    for im in images:
        for _ in range(rng.integers(0, 8)):
            x, y, w, h = rng.uniform(0, 150, 2).tolist() + rng.uniform(5, 60, 2).tolist()
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.choice([1, 2, 5])),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.1)})  # fmt: skip
        for _ in range(120 if im["id"] == 7 else rng.integers(0, 15)):
            near_gt = anns and rng.random() < 0.6
            src = anns[rng.integers(len(anns))]["bbox"] if near_gt else rng.uniform(0, 150, 4).tolist()
            box = (np.array(src) + rng.normal(0, 6, 4)).clip(1).tolist()
            results.append({"image_id": im["id"], "category_id": int(rng.choice([1, 2, 5, 9])),
                            "bbox": box, "score": float(np.round(rng.random(), 2))})  # fmt: skip
    gt_dict = {"images": images, "annotations": anns, "categories": categories}
    gt = ground_truth_from_coco(gt_dict)
    a = analyse_results(gt, detections_from_list(results, gt))
    ap, ap50, ap75 = per_class_ap(cocoeval(gt_dict, results))
    np.testing.assert_allclose(a.ap, ap, atol=1e-9)
    np.testing.assert_allclose(a.ap50, ap50, atol=1e-9)
    np.testing.assert_allclose(a.ap75, ap75, atol=1e-9)
    assert np.isnan(a.ap[3])  # category 9 has no ground truth


def test_no_detections():
    gt = ground_truth_from_coco(coco_gt())
    a = analyse_results(gt, detections_from_list([], gt))
    assert a.ap50.tolist() == [0.0, 0.0, 0.0] and a.threshold.tolist() == [1.0, 1.0, 1.0]
    assert a.confusion[:-1, -1].tolist() == NUM_GT and a.confusion.sum() == sum(NUM_GT)
    assert a.error_summary["errors"]["missed"]["count"] == sum(NUM_GT)
