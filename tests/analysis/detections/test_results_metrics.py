"""Per-class AP, PR curves and best-F1 thresholds of retina_plugin.analysis.detections against pycocotools."""
import numpy as np
import pytest

from retina_plugin.analysis.detections import analyse_results, detections_from_list, ground_truth_from_coco
from coco_reference import reference_cocoeval
from test_results_case import AP50, NAMES, NUM_GT, THRESHOLDS, coco_gt, coco_results


def cocoeval(gt_dict, results):
    """COCOeval's precision array (T, R, K) for area 'all' and 100 detections."""
    return reference_cocoeval(gt_dict, results).eval["precision"][:, :, :, 0, -1]


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
    """
    Random boxes, crowd boxes, a class without ground truth, 120 detections in one image (over
    4 classes, so COCOeval's 100 per image and class cuts none of them).
    """
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


def test_more_than_100_detections_in_an_image_all_count():
    """
    One tiled-like image: 150 cats found by jittered detections, 180 detections in all. The AP is
    COCOeval's with maxDets 180 (the most detections of an image); COCOeval's default 100 would
    keep 100 detections and find at most 100 of the 150 cats.
    """
    rng = np.random.default_rng(0)
    boxes = [[x, y, 16.0, 16.0] for x in range(0, 400, 25) for y in range(0, 300, 25)][:150]
    gt_dict = {
        "images": [{"id": 1, "file_name": "1.png", "height": 300, "width": 400}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": n + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 256.0, "iscrowd": 0}
                        for n, b in enumerate(boxes)],
    }  # fmt: skip
    dets = [(np.array(b) + rng.normal(0, 1.0, 4)).tolist() for b in boxes] + rng.uniform(1, 250, (30, 4)).tolist()
    results = [{"image_id": 1, "category_id": 1, "bbox": b, "score": float(s)}
               for b, s in zip(dets, rng.uniform(0.05, 1.0, len(dets)))]  # fmt: skip
    gt = ground_truth_from_coco(gt_dict)
    a = analyse_results(gt, detections_from_list(results, gt))
    assert a.max_dets == 180 and a.num_det.tolist() == [180] and a.matches.det_tp.sum() == 150
    ref = reference_cocoeval(gt_dict, results, (1, 10, 180))
    assert a.ap50[0] == pytest.approx(100 * ref.stats[1], abs=1e-9)  # summarize's AP50 at maxDets[2]
    assert a.ap75[0] == pytest.approx(100 * ref.stats[2], abs=1e-9)
    # summarize's stats[0] takes maxDets 100 whatever maxDets is: AP .50:.95 as it averages, at 180.
    assert a.ap[0] == pytest.approx(100 * ref.eval["precision"][..., 0, 2].mean(), abs=1e-9)
    assert a.pr50 == pytest.approx(ref.eval["precision"][0, :, :, 0, 2].T, abs=1e-12)
    assert a.recall[0] == 1.0 and a.error_summary["errors"]["missed"]["count"] == 0
    cut = reference_cocoeval(gt_dict, results)  # COCOeval's default maxDets 100
    assert 100 * cut.stats[1] < 70 < a.ap50[0]
