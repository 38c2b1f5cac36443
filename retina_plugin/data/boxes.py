"""
Ground-truth boxes as annotation files really hold them: NaN, zero or negative size, partly or
wholly outside the image. `retina_plugin.modeling.matching.sanitize_boxes` is the one place that
clips or drops them; it runs on the dataset dicts when a training loader is built
(`sanitize_dataset_dicts` here, which logs the counts) and again on the model's ground truth
before anchor matching.
"""
import logging
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
    whose "height"/"width" are known), and log how many of each kind there were.

    Returns:
        Counter: BAD_BOX_KINDS -> count over the whole dataset.
    """
    total = Counter()
    for d in dataset_dicts:
        annotations = d.get("annotations")
        if not annotations or "height" not in d or "width" not in d:
            continue
        xyxy = torch.tensor(
            [BoxMode.convert(list(map(float, a["bbox"])), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
            dtype=torch.float64,
        )
        boxes, keep, counts = sanitize_boxes(xyxy, (d["height"], d["width"]))
        total.update(counts)
        if counts["non-finite"] or counts["degenerate"] or counts["outside image"] or counts["clipped"]:
            kept = [a for a, k in zip(annotations, keep.tolist()) if k]
            for a, box in zip(kept, boxes.tolist()):
                a["bbox"], a["bbox_mode"] = box, BoxMode.XYXY_ABS
            d["annotations"] = kept
    bad = {k: v for k, v in total.items() if v}
    if bad:
        logger.warning(
            f"Dataset {dataset_name!r}: "
            + ", ".join(f"{v} boxes {'dropped as ' + k if k != 'clipped' else 'clipped to the image'}" for k, v in bad.items())
        )
    return total
