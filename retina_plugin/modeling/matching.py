"""
Anchor matching (paper section 4): every anchor gets the class of the ground-truth box it
overlaps with IoU >= the foreground threshold, background below the background threshold,
and is ignored in between; each box also keeps its best anchor(s) (low-quality matches).
Detectron2's `Matcher` does the labelling; this module gives it clean boxes.
"""
import logging
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.logger import log_every_n_seconds

# What happened to a box, in the order it is checked.
BAD_BOX_KINDS = ("non-finite", "degenerate", "outside image", "clipped")


def sanitize_boxes(boxes: torch.Tensor, image_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, int]]:
    """
    Args:
        boxes: (N, 4) XYXY boxes in pixels.
        image_size: (height, width) of the image they belong to.
    Returns:
        boxes: (M, 4) the kept boxes, clipped to the image;
        keep: (N,) bool, which input boxes were kept;
        counts: for each of BAD_BOX_KINDS, how many boxes it applied to: dropped as
            "non-finite" (a NaN or infinite coordinate), "degenerate" (width or height <= 0) or
            "outside image" (nothing left after clipping), or kept but "clipped".
    """
    h, w = image_size
    finite = torch.isfinite(boxes).all(dim=1)
    safe = torch.where(finite[:, None], boxes, torch.zeros_like(boxes))
    proper = finite & (safe[:, 2] > safe[:, 0]) & (safe[:, 3] > safe[:, 1])
    limits = boxes.new_tensor([w, h, w, h])
    clipped = torch.minimum(safe.clamp(min=0), limits)
    inside = proper & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = inside & (clipped != safe).any(dim=1)
    counts = {
        "non-finite": int((~finite).sum()),
        "degenerate": int((finite & ~proper).sum()),
        "outside image": int((proper & ~inside).sum()),
        "clipped": int(changed.sum()),
    }
    return clipped[inside], inside, counts


def sanitized_ground_truth(gt: Instances) -> Instances:
    """
    `gt` without non-finite, degenerate or outside-image boxes, the rest clipped to the image.
    The training loader already did this to the dataset (and logged it); this catches boxes
    from other mappers, which would otherwise make NaN regression targets.
    """
    boxes, keep, counts = sanitize_boxes(gt.gt_boxes.tensor, gt.image_size)
    if keep.all() and not counts["clipped"]:
        return gt
    dropped = {k: v for k, v in counts.items() if v}
    log_every_n_seconds(logging.WARNING, f"ground-truth boxes clipped or dropped before anchor matching: {dropped}", n=60)
    gt = gt[keep]
    gt.gt_boxes = Boxes(boxes)
    return gt


@torch.no_grad()
def label_anchors(anchors: torch.Tensor, gt_instances: List[Instances], matcher: Matcher, num_classes: int):
    """
    Args:
        anchors: (R, 4) anchors of all levels.
        gt_instances: per image, Instances with gt_boxes and gt_classes.
        matcher: Detectron2's Matcher (labels 1 foreground, 0 background, -1 ignored).
        num_classes: K; the background label.
    Returns:
        gt_labels: (N, R) in {-1 ignored, 0..K-1 class, K background};
        gt_boxes: (N, R, 4), each anchor's matched ground-truth box (zeros where none).
    """
    anchor_boxes = Boxes(anchors)
    labels, boxes = [], []
    for gt in gt_instances:
        gt = sanitized_ground_truth(gt)
        if len(gt) == 0:
            labels.append(torch.full((len(anchors),), num_classes, dtype=torch.int64, device=anchors.device))
            boxes.append(torch.zeros_like(anchors))
            continue
        matched_idxs, match_labels = matcher(pairwise_iou(gt.gt_boxes, anchor_boxes))
        labels_i = gt.gt_classes[matched_idxs]
        labels_i[match_labels == 0] = num_classes
        labels_i[match_labels == -1] = -1
        labels.append(labels_i)
        boxes.append(gt.gt_boxes.tensor[matched_idxs])
    return torch.stack(labels), torch.stack(boxes)


def build_anchor_matcher(cfg) -> Matcher:
    """
    The anchor Matcher of a config, as Detectron2's RetinaNet builds it: MODEL.RETINANET.IOU_THRESHOLDS
    and IOU_LABELS, with low-quality matches from MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES.
    """
    return Matcher(
        cfg.MODEL.RETINANET.IOU_THRESHOLDS,
        cfg.MODEL.RETINANET.IOU_LABELS,
        allow_low_quality_matches=cfg.MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES,
    )
