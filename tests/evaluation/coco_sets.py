"""
A generated COCO set with every case COCOeval treats apart, shared by the evaluation tests: crowd
boxes (ignore regions, some covering many detections), boxes of every area range, 4 classes (the
last without ground truth), an empty image, an image without detections, one with detections
only, one image with 250 detections of one class (beyond maxDets 100), tied scores.
`rotated_set`: the same cases with turned XYWHA boxes, some images' ground truth XYWH.
"""
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO

from retina_plugin.evaluation import DetectedBoxes, GroundTruthBoxes

NUM_CLASSES = 4
CROWDED_IMAGE = 5  # its 250 detections of class 1


def _box(rng, size):
    """An XYWH box of side about `size` inside a 1000 x 1000 image."""
    w, h = rng.uniform(0.6, 1.4, 2) * size
    return [float(rng.uniform(0, 1000 - w)), float(rng.uniform(0, 1000 - h)), float(w), float(h)]


def generated_set(seed=0, num_images=30):
    """(ground-truth COCO dict, COCO results dicts)."""
    rng = np.random.default_rng(seed)
    anns, results = [], []

    def add_gt(image, category, box, crowd=False):
        anns.append({"id": len(anns) + 1, "image_id": image, "category_id": category, "bbox": box,
                     "area": box[2] * box[3], "iscrowd": int(crowd)})  # fmt: skip

    def add_det(image, category, box):
        results.append({"image_id": image, "category_id": category, "bbox": box, "score": float(np.round(rng.random(), 2))})

    for image in range(1, num_images + 1):
        if image == 1:  # empty
            continue
        for _ in range(rng.integers(3, 25)):
            add_gt(image, int(rng.integers(1, NUM_CLASSES)), _box(rng, rng.choice([12, 50, 200])), rng.random() < 0.08)
        if image == 2:  # ground truth, no detections
            continue
        for a in [a for a in anns if a["image_id"] == image and rng.random() < 0.85]:
            jitter = (np.array(a["bbox"]) + rng.normal(0, 0.1, 4) * a["bbox"][2]).clip(0.5)
            add_det(image, a["category_id"] if rng.random() < 0.85 else int(rng.integers(1, NUM_CLASSES + 1)), jitter.tolist())
        for _ in range(rng.integers(0, 8)):
            add_det(image, int(rng.integers(1, NUM_CLASSES + 1)), _box(rng, rng.choice([12, 50, 200])))
    add_gt(CROWDED_IMAGE, 1, [0.0, 0.0, 400.0, 400.0], crowd=True)  # an ignore region under many detections
    for _ in range(250):
        add_det(CROWDED_IMAGE, 1, _box(rng, 30))
    add_det(3, NUM_CLASSES, _box(rng, 80))  # the class without ground truth
    images = [{"id": i, "width": 1000, "height": 1000} for i in range(1, num_images + 2)]  # the last: detections only
    add_det(num_images + 1, 2, _box(rng, 60))
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, NUM_CLASSES + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, results


def _turned(rng, size):
    """An XYWHA box of side about `size` inside a 1000 x 1000 image, at any angle in [-180, 180)."""
    w, h = rng.uniform(0.4, 1.6, 2) * size
    return [*rng.uniform(size, 1000 - size, 2).tolist(), float(w), float(h), float(rng.uniform(-180, 180))]


def rotated_set(seed=0, num_images=300, xywh_every=7):
    """
    (ground-truth COCO dict, COCO results dicts) of XYWHA boxes; the ground truth of images whose
    id is a multiple of `xywh_every` (0: none) is XYWH, facing XYWHA detections near angle 0.
    """
    rng = np.random.default_rng(seed)
    anns, results = [], []
    for image in range(1, num_images + 1):
        xywh = xywh_every and image % xywh_every == 0
        for _ in range(rng.integers(0, 10)):
            box = _turned(rng, rng.choice([12, 50, 200]))
            category, crowd = int(rng.integers(1, NUM_CLASSES)), bool(rng.random() < 0.08)
            if xywh:
                box[4] = 0.0
            if rng.random() < 0.85:  # detected: jittered along each side and turned a little
                found = np.array(box) + rng.normal(0, 0.08, 5) * np.r_[box[2], box[3], box[2], box[3], 60]
                found[2:4] = found[2:4].clip(1.0)
                category_found = category if rng.random() < 0.85 else int(rng.integers(1, NUM_CLASSES + 1))
                results.append({"image_id": image, "category_id": category_found, "bbox": found.tolist(),
                                "score": float(np.round(rng.random(), 2))})  # fmt: skip
            cx, cy, w, h, _ = box
            bbox = [cx - w / 2, cy - h / 2, w, h] if xywh else box
            anns.append({"id": len(anns) + 1, "image_id": image, "category_id": category, "bbox": bbox,
                         "area": w * h, "iscrowd": int(crowd)})  # fmt: skip
        for _ in range(rng.integers(0, 4)):  # false positives
            category, box = int(rng.integers(1, NUM_CLASSES + 1)), _turned(rng, rng.choice([12, 50, 200]))
            results.append({"image_id": image, "category_id": category, "bbox": box, "score": float(np.round(rng.random(), 2))})
    # image 1: a crowd box (turned, unless image 1's ground truth is XYWH) under 150 detections, beyond maxDets 100
    crowd = [300.0, 400.0, 400.0, 200.0] if xywh_every == 1 else [500.0, 500.0, 400.0, 200.0, 30.0]
    anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "bbox": crowd, "area": 400.0 * 200.0, "iscrowd": 1})
    for _ in range(150):
        results.append({"image_id": 1, "category_id": 1, "bbox": _turned(rng, 30), "score": float(np.round(rng.random(), 2))})
    images = [{"id": i, "width": 1000, "height": 1000} for i in range(1, num_images + 1)]
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, NUM_CLASSES + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, results


def coco(gt_dict) -> COCO:
    """A fresh pycocotools COCO of `gt_dict` (COCOeval writes into its annotations)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {key: [dict(x) for x in value] for key, value in gt_dict.items()}
        coco_gt.createIndex()
    return coco_gt


def arrays(gt_dict, results):
    """The COCO dicts as evaluate_boxes' arrays (images and classes as indices in sorted id order; boxes
    (N, 4) XYWH or (N, 5) XYWHA as the dicts hold them)."""
    image = {im["id"]: i for i, im in enumerate(sorted(gt_dict["images"], key=lambda im: im["id"]))}
    label = {c["id"]: k for k, c in enumerate(sorted(gt_dict["categories"], key=lambda c: c["id"]))}
    anns = gt_dict["annotations"]
    gt = GroundTruthBoxes(
        np.array([image[a["image_id"]] for a in anns], np.int64), np.array([label[a["category_id"]] for a in anns]),
        _boxes([a["bbox"] for a in anns]), np.array([bool(a["iscrowd"]) for a in anns]),
    )  # fmt: skip
    dets = DetectedBoxes(
        np.array([image[r["image_id"]] for r in results], np.int64), np.array([label[r["category_id"]] for r in results]),
        _boxes([r["bbox"] for r in results]), np.array([r["score"] for r in results]),
    )  # fmt: skip
    return gt, dets, len(image), len(label)


def _boxes(boxes: list) -> np.ndarray:
    return np.array(boxes, np.float64).reshape(-1, len(boxes[0]) if boxes else 4)


def assert_same_matches(fast, ref, precision_atol: float) -> None:
    """Two `evaluate_boxes` results agree: every per-detection and per-box array and each class's rows
    equal, precision within precision_atol (the compiled accumulate rounds its last bit apart)."""
    for key in ("num_gt", "det_gt", "det_ignored", "gt_matched", "recall", "scores"):
        np.testing.assert_array_equal(getattr(fast, key), getattr(ref, key), err_msg=key)
    np.testing.assert_allclose(fast.precision, ref.precision, rtol=0, atol=precision_atol)
    for fast_rows, ref_rows in zip(fast.class_rows, ref.class_rows, strict=True):
        np.testing.assert_array_equal(fast_rows, ref_rows)
