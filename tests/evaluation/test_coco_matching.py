"""
retina_plugin.evaluation.coco_matching against pycocotools' COCOeval run the usual way (COCO dicts, loadRes),
with either COCOeval inside (`use_fast_impl`): pycocotools' gives its arrays exactly, faster-coco-eval's
(C++) to the last bit of a float64 (its precision 1.0 where pycocotools' sums give 0.9999999999999998).
"""
import numpy as np
import pytest

from coco_reference import reference_cocoeval
from coco_sets import arrays
from retina_plugin.evaluation import COCO_IOU_THRESHOLDS, evaluate_boxes

ULP_AT_1 = 2.3e-16  # float64 spacing below 1.0, the most the C++ accumulate differs by


@pytest.fixture(params=[False, True], ids=["pycocotools", "faster-coco-eval"])
def use_fast_impl(request):
    return request.param


def assert_cocoeval_equal(actual, desired, use_fast_impl):
    """pycocotools' arrays: exactly; faster-coco-eval's: to the spacing of float64 below 1."""
    if use_fast_impl:
        np.testing.assert_allclose(actual, desired, rtol=0, atol=ULP_AT_1)
    else:
        np.testing.assert_array_equal(actual, desired)


def random_case(seed):
    """Random boxes, 10% crowd, 4 classes, the last one without ground truth."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "height": 300, "width": 300} for i in (3, 7, 11, 12, 20)]
    categories = [{"id": c} for c in (1, 2, 5, 9)]
    with_gt = [1, 2, 5]
    anns, results = [], []
    for im in images:
        for _ in range(rng.integers(0, 8)):
            x, y, w, h = rng.uniform(0, 250, 2).tolist() + rng.uniform(5, 50, 2).tolist()
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.choice(with_gt)),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.1)})  # fmt: skip
        image_anns = [a for a in anns if a["image_id"] == im["id"]]
        for _ in range(rng.integers(0, 15)):
            near = image_anns and rng.random() < 0.7
            src = image_anns[rng.integers(len(image_anns))] if near else None
            box = (np.array(src["bbox"]) + rng.normal(0, 4, 4)).clip(1) if near else rng.uniform(1, 200, 4)
            category = src["category_id"] if near and rng.random() < 0.8 else int(rng.choice([c["id"] for c in categories]))
            results.append({"image_id": im["id"], "category_id": category, "bbox": box.tolist(),
                            "score": float(np.round(rng.random(), 2))})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": categories}, results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_and_precision_are_cocoevals(seed, use_fast_impl):
    gt_dict, results = random_case(seed)
    ref = reference_cocoeval(gt_dict, results)
    gt, dets, num_images, num_classes = arrays(gt_dict, results)
    ev = evaluate_boxes(gt, dets, num_images, num_classes, area_ranges=("all", "small", "medium", "large"),
                        use_fast_impl=use_fast_impl)  # fmt: skip
    assert ev.max_dets <= 100  # so the reference's maxDets 100 cuts nothing either
    assert_cocoeval_equal(ev.precision, ref.eval["precision"][..., -1], use_fast_impl)
    np.testing.assert_array_equal(ev.recall, ref.eval["recall"][..., -1])
    crowd = gt.crowd
    for t, iou in enumerate(COCO_IOU_THRESHOLDS):
        m = ev.matches(iou)
        for k in range(num_classes):
            if ev.num_gt[k] == 0:
                continue
            # TP count = recall x non-crowd boxes; the matched boxes are exactly those TPs' boxes.
            tp = m.det_tp & (dets.label == k)
            assert tp.sum() == round(ref.eval["recall"][t, k, 0, -1] * ev.num_gt[k])
            assert sorted(m.det_gt[tp]) == sorted(np.flatnonzero(m.gt_matched & (gt.label == k)))
            _, ranked_tp = ev.ranked_detections(k, iou)
            assert ranked_tp.sum() == tp.sum()
        assert (gt.label[m.det_gt[m.det_tp]] == dets.label[m.det_tp]).all()  # within a class
        assert (gt.image[m.det_gt[m.det_tp]] == dets.image[m.det_tp]).all()
        assert crowd[m.det_gt[m.det_ignored & (m.det_gt >= 0)]].all()  # ignored: matched a crowd box
        assert not (m.gt_matched & crowd).any()
    np.testing.assert_array_equal(ev.num_gt[:-1] > 0, True)
    assert ev.num_gt[-1] == 0 and np.isnan(ev.class_ap()[-1])
    assert ev.mean_ap() == pytest.approx(ref.stats[0], abs=1e-12)


def crowded_case(num_gt=150, num_det=160, seed=0):
    """One 400x300 image: `num_gt` boxes on a grid, detections jittered from them (scores random) and random ones."""
    rng = np.random.default_rng(seed)
    boxes = [[x, y, 16.0, 16.0] for x in range(0, 400, 25) for y in range(0, 300, 25)][:num_gt]
    anns = [{"id": n + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 256.0, "iscrowd": 0}
            for n, b in enumerate(boxes)]  # fmt: skip
    dets = [(np.array(b) + rng.normal(0, 1.0, 4)).tolist() for b in boxes]
    dets += rng.uniform(1, 250, (num_det - num_gt, 4)).tolist()
    results = [{"image_id": 1, "category_id": 1, "bbox": b, "score": float(s)}
               for b, s in zip(dets, rng.uniform(0.05, 1.0, num_det))]  # fmt: skip
    gt_dict = {"images": [{"id": 1, "height": 300, "width": 400}], "annotations": anns, "categories": [{"id": 1}]}
    return gt_dict, results


def test_more_than_100_detections_per_image_are_all_evaluated(use_fast_impl):
    """One image with 160 detections: AP equals COCOeval's at maxDets 160; COCOeval's default 100 cuts 60."""
    gt_dict, results = crowded_case()
    gt, dets, num_images, num_classes = arrays(gt_dict, results)
    ev = evaluate_boxes(gt, dets, num_images, num_classes, use_fast_impl=use_fast_impl)
    assert ev.max_dets == 160 and not ev.det_ignored.any()  # every detection evaluated
    assert ev.matches(0.5).det_tp.sum() == 150
    ref = reference_cocoeval(gt_dict, results, (1, 10, ev.max_dets))
    # pycocotools' summarize: stats[1] (AP50) at maxDets[2]; its stats[0] takes maxDets 100 whatever maxDets
    # is, so AP .50:.95 is checked as summarize averages it, on the arrays accumulated at maxDets 160.
    assert ev.mean_ap([0.5]) == pytest.approx(ref.stats[1], abs=1e-12)
    assert ev.mean_ap() == pytest.approx(ref.eval["precision"][..., 0, 2].mean(), abs=1e-12)
    assert_cocoeval_equal(ev.precision[..., 0], ref.eval["precision"][..., 0, 2], use_fast_impl)
    default = reference_cocoeval(gt_dict, results)  # maxDets 100: at most 100 of the 150 boxes can be found
    assert default.stats[1] < 0.7 < ev.mean_ap([0.5])


def test_detections_beyond_max_dets_are_ignored(use_fast_impl):
    gt_dict, results = crowded_case()
    gt, dets, num_images, num_classes = arrays(gt_dict, results)
    ev = evaluate_boxes(gt, dets, num_images, num_classes, max_dets=100, use_fast_impl=use_fast_impl)
    cut = np.argsort(-dets.scores, kind="mergesort")[100:]
    assert len(cut) == 60 and ev.det_ignored[:, cut].all() and (ev.det_gt[:, cut] == -1).all()
    assert not np.delete(ev.det_ignored, cut, axis=1).any()
    ref = reference_cocoeval(gt_dict, results)
    assert_cocoeval_equal(ev.precision, ref.eval["precision"][..., :1, -1], use_fast_impl)


def test_no_detections_and_no_images_of_a_class(use_fast_impl):
    gt_dict, _ = random_case(0)
    gt, dets, num_images, num_classes = arrays(gt_dict, [])
    ev = evaluate_boxes(gt, dets, num_images, num_classes, use_fast_impl=use_fast_impl)
    assert ev.det_gt.shape == (10, 0) and not ev.gt_matched.any()
    assert ev.class_ap()[:-1].tolist() == [0.0] * (num_classes - 1) and np.isnan(ev.class_ap()[-1])
