"""
The hand-built case of the results-analysis tests (no tests here; the test_results_* modules
import it): 4 images of 256 px, 3 classes, 8 ground-truth boxes and 11 detections, each made
to be one known kind of outcome at IoU 0.5 (shifting a 40 px box by 5 / 20 px gives IoU
0.78 / 0.33). Every number the tests expect follows from the comments below; the APs are
COCO's 101-point sums written as (sum of interpolated precisions) / 101.
"""
import json
import os

import cv2
import numpy as np

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
CAT, DOG, BIRD = 1, 2, 3
GT = {  # image id -> [(category, [x, y, w, h])]
    1: [(CAT, [10, 10, 40, 40]), (DOG, [100, 100, 40, 40]), (BIRD, [180, 20, 40, 40])],
    2: [(CAT, [50, 50, 40, 40]), (DOG, [150, 150, 40, 40])],
    3: [(BIRD, [30, 30, 40, 40]), (BIRD, [150, 30, 40, 40]), (CAT, [100, 150, 40, 40])],
    4: [],
}
DETECTIONS = [  # (image, category, box, score, what it is at IoU 0.5)
    (1, CAT, [10, 10, 40, 40], 0.95, "tp"),
    (1, CAT, [15, 10, 40, 40], 0.92, "dupe"),  # IoU 0.78 with the matched cat
    (1, CAT, [100, 100, 40, 40], 0.90, "cls"),  # exactly on the dog, which no dog detection finds
    (1, BIRD, [200, 20, 40, 40], 0.80, "loc"),  # IoU 0.33 with the bird
    (2, CAT, [50, 50, 40, 40], 0.85, "tp"),
    (2, DOG, [150, 150, 40, 40], 0.70, "tp"),
    (2, DOG, [20, 200, 40, 40], 0.75, "bkg"),  # overlaps nothing
    (2, BIRD, [70, 50, 40, 40], 0.95, "both"),  # IoU 0.33 with the cat
    (3, BIRD, [30, 30, 40, 40], 0.90, "tp"),  # the second bird and the cat of image 3: missed
    (3, DOG, [200, 200, 40, 40], 0.30, "bkg"),
    (4, CAT, [10, 10, 40, 40], 0.40, "bkg"),  # image 4 has no ground truth
]
NAMES = ["cat", "dog", "bird"]
NUM_GT = [3, 2, 3]
ERROR_COUNTS = {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 3, "missed": 2}

# AP50 per class (cat, dog, bird) x 101, ranked detections as in DETECTIONS:
# cat  .95 TP .92 FP .90 FP .85 TP .40 FP, 3 gt: 34 points of precision 1, 33 of 1/2 -> 50.5
# dog  .75 FP .70 TP .30 FP, 2 gt: 51 points of 1/2 -> 25.5
# bird .95 FP .90 TP .80 FP, 3 gt: 34 points of 1/2 -> 17
AP50 = [50.5 / 101, 25.5 / 101, 17 / 101]
FIXED_AP50_SUMS = {  # the three classes' sums after fixing each error type, / 303 = mean AP50
    None: 50.5 + 25.5 + 17,
    "cls": 56 + (51 + 50 * 2 / 3) + 17,  # cat .90 becomes a dog TP: dog .90 TP .75 FP .70 TP .30 FP
    "loc": 50.5 + 25.5 + 67 * 2 / 3,  # bird .80 becomes a TP: .95 FP .90 TP .80 TP
    "both": 50.5 + 25.5 + 34,  # bird .95 dropped
    "dupe": 56 + 25.5 + 17,  # cat .92 dropped
    "bkg": 50.5 + 51 + 17,  # dog .75 dropped (.30 and cat .40 rank below every TP)
    "missed": 76 + 25.5 + 25.5,  # cat and bird count 2 gt each
}
# F1-optimal thresholds: cat .85 (P 1/2, R 2/3), dog .70 (P 1/2, R 1/2), bird .90 (P 1/2, R 1/3).
THRESHOLDS = [0.85, 0.70, 0.90]
# Kept: cat .95 .92 .90 .85, dog .75 .70, bird .95 .90. Rows cat, dog, bird, background;
# columns cat, dog, bird, missed. The dupe is background (its cat is taken), the cls error
# takes the dog; bird .80 (loc) is below its threshold, so that bird is missed.
CONFUSION = [
    [2, 0, 0, 1],
    [1, 1, 0, 0],
    [0, 0, 1, 2],
    [1, 1, 1, 0],
]


def coco_gt(image_dir: str = "") -> dict:
    images = [{"id": i, "file_name": os.path.join(image_dir, f"{i}.png"), "height": 256, "width": 256} for i in GT]
    anns = [
        {"id": n + 1, "image_id": i, "category_id": c, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
        for n, (i, c, box) in enumerate((i, c, box) for i, boxes in GT.items() for c, box in boxes)
    ]
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def coco_results() -> list:
    return [{"image_id": i, "category_id": c, "bbox": box, "score": s} for i, c, box, s, _ in DETECTIONS]


def write_case(root: str):
    """Images, annotations.json (file names relative to images/) and predictions.json under root."""
    images = os.path.join(root, "images")
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in GT:
        cv2.imwrite(os.path.join(images, f"{i}.png"), rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    gt_path, predictions = os.path.join(root, "annotations.json"), os.path.join(root, "predictions.json")
    with open(gt_path, "w") as f:
        json.dump(coco_gt(), f)
    with open(predictions, "w") as f:
        json.dump(coco_results(), f)
    return gt_path, images, predictions
