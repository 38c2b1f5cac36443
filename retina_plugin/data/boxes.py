"""
Ground-truth boxes as annotation files really hold them: NaN, zero or negative size, partly or
wholly outside the image. `retina_plugin.modeling.matching.sanitize_boxes` is the one place that
clips or drops them; it runs on the dataset dicts when a training loader is built
(`sanitize_dataset_dicts` here, which logs the counts) and again on the model's ground truth
before anchor matching.
"""
import logging
import math
from collections import Counter
from typing import List

import torch
from detectron2.structures import BoxMode

from ..modeling.matching import BAD_BOX_KINDS, sanitize_boxes

__all__ = ["BAD_BOX_KINDS", "sanitize_boxes", "sanitize_dataset_dicts"]

logger = logging.getLogger(__name__)

def sanitize_dataset_dicts(dataset_dicts: List[dict], dataset_name: str) -> Counter:
    """
    Clip or drop the bad boxes of Detectron2 dataset dicts in place (annotations of images
    whose "height"/"width" are known), and log how many of each kind there were. Rotated boxes
    (XYWHA_ABS) are dropped by the same rules but never clipped (`_sanitized_rotated`).

    Returns:
        Counter: BAD_BOX_KINDS -> count over the whole dataset.
    """
    total = Counter()
    for d in dataset_dicts:
        annotations = d.get("annotations")
        if not annotations or "height" not in d or "width" not in d:
            continue
        size = (d["height"], d["width"])
        rotated = [a["bbox_mode"] == BoxMode.XYWHA_ABS for a in annotations]
        kept = _sanitized_horizontal([a for a, r in zip(annotations, rotated) if not r], size, total)
        kept += _sanitized_rotated([a for a, r in zip(annotations, rotated) if r], size, total)
        if len(kept) < len(annotations):
            kept_ids = {id(a) for a in kept}
            d["annotations"] = [a for a in annotations if id(a) in kept_ids]
    bad = {k: v for k, v in total.items() if v}
    if bad:
        logger.warning(
            f"Dataset {dataset_name!r}: "
            + ", ".join(f"{v} boxes {'dropped as ' + k if k != 'clipped' else 'clipped to the image'}" for k, v in bad.items())
        )
    return total


def _sanitized_horizontal(annotations: List[dict], size, total: Counter) -> List[dict]:
    """The annotations `sanitize_boxes` keeps, their boxes clipped (as XYXY_ABS) where any box was bad."""
    if not annotations:
        return []
    xyxy = torch.tensor(
        [BoxMode.convert(list(map(float, a["bbox"])), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
        dtype=torch.float64,
    )
    boxes, keep, counts = sanitize_boxes(xyxy, size)
    total.update(counts)
    kept = [a for a, k in zip(annotations, keep.tolist()) if k]
    if counts["non-finite"] or counts["degenerate"] or counts["outside image"] or counts["clipped"]:
        for a, box in zip(kept, boxes.tolist()):
            a["bbox"], a["bbox_mode"] = box, BoxMode.XYXY_ABS
    return kept


def _sanitized_rotated(annotations: List[dict], size, total: Counter) -> List[dict]:
    """
    The rotated annotations that are finite, of positive width and height, and whose enclosing
    box reaches into the image. They are not clipped: a clipped rotated box is no longer a
    rectangle of the object; the mapper clips the nearly horizontal ones as Detectron2 does
    (`RotatedBoxes.clip`).
    """
    height, width = size
    kept = []
    for a in annotations:
        box = [float(v) for v in a["bbox"]]
        if not all(math.isfinite(v) for v in box):
            total["non-finite"] += 1
        elif box[2] <= 0 or box[3] <= 0:
            total["degenerate"] += 1
        else:
            x0, y0, x1, y1 = BoxMode.convert(box, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                total["outside image"] += 1
            else:
                kept.append(a)
    return kept
