"""
The two inputs of the error analysis as flat numpy arrays: a dataset's ground truth (a COCO
dict: images, categories, annotations) and a COCO results file (a list of
{"image_id", "category_id", "bbox": [x, y, w, h], "score"}). Boxes stay XYWH as in COCO; rotated
boxes, 5 numbers [cx, cy, w, h, angle] (Detectron2's XYWHA, as its RotatedCOCOEvaluator writes
them), stay XYWHA, and when either side has them both sides are XYWHA (`same_box_kind`: an
XYWH box at angle 0), matched with rotated IoU. Every detection is kept: `evaluate` runs COCOeval with a maxDets covering the most detections
of an image, so that a tiled image with thousands of detections is not cut at COCO's 100.
"""
import json
from dataclasses import dataclass, replace
from typing import List, Sequence

import numpy as np
from ...errors import InputFileError

from ...evaluation import (
    CocoEvaluation, DetectedBoxes, GroundTruthBoxes, as_rotated, box_iou, evaluate_boxes, is_rotated_boxes,
)  # fmt: skip

__all__ = [ "GroundTruth", "Detections", "ground_truth_from_coco", "load_detections", "detections_from_list",
    "same_box_kind", "image_slices", "image_ious", "evaluate",
]  # fmt: skip


@dataclass
class GroundTruth:
    """Boxes sorted by image (their order kept within one): image, class index, XYWH box, crowd flag."""

    image_ids: List[int]  # sorted, as COCOeval's imgIds
    file_names: List[str]
    category_ids: List[int]  # sorted: class index k is category_ids[k]
    class_names: List[str]
    image: np.ndarray  # (G,) image index
    cls: np.ndarray  # (G,) class index
    boxes: np.ndarray  # (G, 4) XYWH or (G, 5) XYWHA
    crowd: np.ndarray  # (G,) bool

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def num_gt(self) -> np.ndarray:
        """(K,) non-crowd boxes per class."""
        return np.bincount(self.cls[~self.crowd], minlength=self.num_classes)


@dataclass
class Detections:
    """Sorted by image, then score (descending, stable in file order): image, class index, XYWH / XYWHA box, score."""

    image: np.ndarray
    cls: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self):
        return len(self.scores)


def image_slices(image: np.ndarray, num_images: int) -> np.ndarray:
    """(num_images + 1,) bounds: rows of image i of an array sorted by image are bounds[i]:bounds[i + 1]."""
    return np.searchsorted(image, np.arange(num_images + 1), side="left")


def ground_truth_from_coco(coco: dict) -> GroundTruth:
    """The GroundTruth of a COCO dict (as pycocotools: iscrowd boxes are ignored regions)."""
    images = sorted(coco["images"], key=lambda im: im["id"])
    image_index = {im["id"]: i for i, im in enumerate(images)}
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    class_index = {c["id"]: k for k, c in enumerate(categories)}
    anns = [a for a in coco.get("annotations", []) if a["image_id"] in image_index and a["category_id"] in class_index]
    image = np.array([image_index[a["image_id"]] for a in anns], dtype=np.int64)
    order = np.argsort(image, kind="stable")
    boxes = box_array([a["bbox"] for a in anns])
    return GroundTruth(
        image_ids=[im["id"] for im in images],
        file_names=[im.get("file_name", "") for im in images],
        category_ids=[c["id"] for c in categories],
        class_names=[str(c.get("name", c["id"])) for c in categories],
        image=image[order],
        cls=np.array([class_index[a["category_id"]] for a in anns], dtype=np.int64)[order],
        boxes=boxes[order],
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)[order],
    )


def detections_from_list(results: list, gt: GroundTruth, source: str = "predictions") -> Detections:
    """
    Detections of a COCO results list, checked against `gt` (a InputFileError naming `source` and
    the first bad entry), all of them.
    """
    if not isinstance(results, list):
        raise InputFileError(f"{source}: expected a list of COCO detections, got a {type(results).__name__}")
    image_index = {image_id: i for i, image_id in enumerate(gt.image_ids)}
    class_index = {category_id: k for k, category_id in enumerate(gt.category_ids)}
    image, cls, boxes, scores = [], [], [], []
    for n, r in enumerate(results):
        where = f"{source}: detection {n}"
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= r.keys():
            raise InputFileError(f"{where}: needs image_id, category_id, bbox and score, got {str(r)[:80]}")
        if r["image_id"] not in image_index:
            raise InputFileError(f"{where}: image_id {r['image_id']!r} is not an image of the dataset")
        if r["category_id"] not in class_index:
            raise InputFileError(f"{where}: category_id {r['category_id']!r} is not a category of the dataset")
        box, score = r["bbox"], r["score"]
        if not (isinstance(box, list) and len(box) in (4, 5) and all(_is_number(v) for v in box)) or not _is_number(score):
            raise InputFileError(
                f"{where}: bbox must be 4 numbers [x, y, w, h] or 5 [cx, cy, w, h, angle] and score a number"
            )
        image.append(image_index[r["image_id"]])
        cls.append(class_index[r["category_id"]])
        boxes.append(box)
        scores.append(score)
    image, cls, scores = np.array(image, np.int64), np.array(cls, np.int64), np.array(scores, np.float64)
    boxes = box_array(boxes)
    order = np.lexsort((np.arange(len(scores)), -scores, image))
    return Detections(image[order], cls[order], boxes[order], scores[order])


def load_detections(path: str, gt: GroundTruth) -> Detections:
    """The Detections of a COCO results json file (a InputFileError naming the file if it is unusable)."""
    try:
        with open(path) as f:
            results = json.load(f)
    except OSError as e:
        raise InputFileError(f"{path}: cannot read it ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputFileError(f"{path}: not a JSON file ({e})") from e
    return detections_from_list(results, gt, source=path)


def box_array(boxes: list) -> np.ndarray:
    """(N, 4) XYWH of 4-number boxes; (N, 5) XYWHA when one has 5 numbers (then the 4-number ones at angle 0)."""
    four = np.array([len(b) == 4 for b in boxes], bool)
    if four.all():
        return np.array(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), 5))
    out[four] = as_rotated(np.array([b for b in boxes if len(b) == 4], np.float64).reshape(-1, 4))
    out[~four] = np.array([b for b in boxes if len(b) != 4], np.float64).reshape(-1, 5)
    return out


def same_box_kind(gt: GroundTruth, dets: Detections):
    """(gt, dets), both XYWHA when either has XYWHA boxes (XYWH ones at angle 0), else as they are."""
    if not (is_rotated_boxes(gt.boxes) or is_rotated_boxes(dets.boxes)):
        return gt, dets
    return replace(gt, boxes=as_rotated(gt.boxes)), replace(dets, boxes=as_rotated(dets.boxes))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def image_ious(gt: GroundTruth, dets: Detections) -> List[np.ndarray]:
    """Per image: the (D_i, G_i) IoU (rotated for XYWHA boxes) of its detections (rows) with its ground truth (columns), any class."""
    num = len(gt.image_ids)
    g, d = image_slices(gt.image, num), image_slices(dets.image, num)
    return [
        box_iou(dets.boxes[d[i] : d[i + 1]], gt.boxes[g[i] : g[i + 1]], gt.crowd[g[i] : g[i + 1]]) for i in range(num)
    ]


def evaluate(gt: GroundTruth, dets: Detections, iou_thresholds: Sequence[float]) -> CocoEvaluation:
    """COCOeval (area 'all', every detection) of `dets` against `gt` at `iou_thresholds`."""
    boxes = GroundTruthBoxes(gt.image, gt.cls, gt.boxes, gt.crowd)
    detected = DetectedBoxes(dets.image, dets.cls, dets.boxes, dets.scores)
    return evaluate_boxes(boxes, detected, len(gt.image_ids), gt.num_classes, iou_thresholds)
