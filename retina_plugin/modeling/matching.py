"""
Anchor matching (paper section 4): every anchor gets the class of the ground-truth box it
overlaps with IoU >= the foreground threshold, background below the background threshold,
and is ignored in between; each box also keeps its best anchor(s) (low-quality matches).
Detectron2's `Matcher` rules label the anchors (`match_anchors`), on clean boxes. Boxes are
horizontal (`Boxes`, XYXY, Detectron2's `pairwise_iou`) or rotated (`RotatedBoxes`, XYWHA,
the exact rotated IoU of `retina_plugin.ops`), as the anchors are.

The box x anchor IoU matrix is never held whole: an image with many boxes would need
G x R x ~28 bytes (20,000 boxes on a 256 px image: 6.7 GB), so the anchors are taken in
chunks of about PAIRS_PER_CHUNK (box, anchor) pairs and peak memory grows with G + R.
"""
import logging
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, RotatedBoxes, pairwise_iou
from detectron2.utils.logger import log_every_n_seconds

from ..ops import pairwise_iou_rotated

# (box, anchor) IoUs computed at once: pairwise_iou's temporaries take ~28 bytes a pair, so ~120 MB.
PAIRS_PER_CHUNK = 1 << 22

# RotatedBoxes.clip's default, as Detectron2's annotations_to_instances_rotated clips: degrees
# from horizontal within which a rotated box is clipped to the image like a horizontal one.
CLIP_ANGLE_THRESHOLD = 1.0

# What happened to a box, in the order it is checked.
BAD_BOX_KINDS = ("non-finite", "degenerate", "outside image", "clipped")


def sanitize_boxes(boxes: torch.Tensor, image_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, int]]:
    """
    Args:
        boxes: (N, 4) XYXY or (N, 5) XYWHA boxes in pixels.
        image_size: (height, width) of the image they belong to.
    Returns:
        boxes: (M, 4) or (M, 5) the kept boxes, clipped to the image (`_clip_rotated` for rotated ones);
        keep: (N,) bool, which input boxes were kept;
        counts: for each of BAD_BOX_KINDS, how many boxes it applied to: dropped as
            "non-finite" (a NaN or infinite coordinate), "degenerate" (width or height <= 0) or
            "outside image" (nothing left after clipping), or kept but "clipped".
    """
    finite = torch.isfinite(boxes).all(dim=1)
    safe = torch.where(finite[:, None], boxes, torch.zeros_like(boxes))
    if boxes.shape[1] == 5:
        proper = finite & (safe[:, 2] > 0) & (safe[:, 3] > 0)
        clipped, inside = _clip_rotated(safe, image_size)
        inside &= proper
    else:
        h, w = image_size
        proper = finite & (safe[:, 2] > safe[:, 0]) & (safe[:, 3] > safe[:, 1])
        clipped = torch.minimum(safe.clamp(min=0), boxes.new_tensor([w, h, w, h]))
        inside = proper & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    # For rotated boxes, angles brought into [-180, 180) are the same boxes, not clipped ones.
    changed = inside & (clipped[:, :4] != safe[:, :4]).any(dim=1)
    counts = {
        "non-finite": int((~finite).sum()),
        "degenerate": int((finite & ~proper).sum()),
        "outside image": int((proper & ~inside).sum()),
        "clipped": int(changed.sum()),
    }
    return clipped[inside], inside, counts


def _clip_rotated(boxes: torch.Tensor, image_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Rotated boxes (N, 5) clipped as Detectron2's rotated data path clips them
    (`annotations_to_instances_rotated`: `RotatedBoxes.clip`, which cuts only the boxes within
    CLIP_ANGLE_THRESHOLD of horizontal to the image; a turned box has no one clipped rectangle
    and stays whole). Only boxes that cross the image's edge change, so boxes that came through
    that path come out as they went in, in their dtype.
    Returns the boxes and (N,) bool: whether something is left inside the image (a nonempty box
    whose enclosing box overlaps it).
    """
    h, w = image_size
    detectron2_boxes = RotatedBoxes(boxes.clone())  # float32, as Detectron2 holds them
    detectron2_boxes.clip(image_size, CLIP_ANGLE_THRESHOLD)
    cx, cy, bw, bh, angle = boxes.unbind(1)
    near_horizontal = ((angle + 180.0) % 360.0 - 180.0).abs() <= CLIP_ANGLE_THRESHOLD  # as RotatedBoxes.clip tests it
    crossing = near_horizontal & ((cx - bw / 2 < 0) | (cy - bh / 2 < 0) | (cx + bw / 2 > w) | (cy + bh / 2 > h))
    clipped = torch.where(crossing[:, None], detectron2_boxes.tensor.to(boxes.dtype), boxes)
    x0, y0, x1, y1 = enclosing_boxes(clipped).unbind(1)
    inside = (clipped[:, 2] > 0) & (clipped[:, 3] > 0) & (x0 < w) & (x1 > 0) & (y0 < h) & (y1 > 0)
    return clipped, inside


def enclosing_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """The axis-aligned boxes (N, 4) XYXY enclosing the rotated boxes (N, 5) XYWHA."""
    cx, cy, w, h, angle = boxes.unbind(1)
    cos, sin = torch.cos(torch.deg2rad(angle)).abs(), torch.sin(torch.deg2rad(angle)).abs()
    half_w, half_h = (w * cos + h * sin) / 2, (w * sin + h * cos) / 2
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=1)


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
    gt.gt_boxes = type(gt.gt_boxes)(boxes)
    return gt


def _anchor_chunks(num_boxes: int, num_anchors: int, pairs_per_chunk: int):
    """(start, stop) of consecutive anchor ranges holding at most about `pairs_per_chunk` pairs each."""
    step = max(1, pairs_per_chunk // max(num_boxes, 1))
    return [(start, min(start + step, num_anchors)) for start in range(0, num_anchors, step)]


def _extents(boxes: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (N, 4) as they are; rotated boxes (N, 5) as their enclosing XYXY boxes, 1 px
    wider on each side so that rounding never culls a pair the exact IoU finds touching."""
    return boxes if boxes.shape[1] == 4 else enclosing_boxes(boxes) + boxes.new_tensor([-1.0, -1.0, 1.0, 1.0])


def _boxes_overlapping(gt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """
    (g,) ascending indices of the boxes `gt` (G, 4 or 5) whose extent overlaps the extent of
    `anchors` (C, 4 or 5) with positive area; every other box has IoU exactly 0 with every
    anchor of the chunk.
    """
    gt, anchors = _extents(gt), _extents(anchors)
    x0, y0 = anchors[:, 0].min(), anchors[:, 1].min()
    x1, y1 = anchors[:, 2].max(), anchors[:, 3].max()
    return ((gt[:, 0] < x1) & (gt[:, 2] > x0) & (gt[:, 1] < y1) & (gt[:, 3] > y0)).nonzero().squeeze(1)


def box_iou(boxes1, boxes2) -> torch.Tensor:
    """
    (N, M) IoU of Boxes (Detectron2's `pairwise_iou`) or of RotatedBoxes (the exact
    `retina_plugin.ops.pairwise_iou_rotated`; Detectron2's is a compiled op not loadable here).
    """
    if isinstance(boxes1, RotatedBoxes):
        return pairwise_iou_rotated(boxes1.tensor, boxes2.tensor)
    return pairwise_iou(boxes1, boxes2)


@torch.no_grad()
def match_anchors(gt_boxes, anchors, matcher: Matcher, pairs_per_chunk: int = PAIRS_PER_CHUNK):
    """
    `matcher(box_iou(gt_boxes, anchors))`, equal to it (labels, matched boxes, ties,
    low-quality matches), without the (G, R) IoU matrix: consecutive anchors (neighbours on one
    level) are taken in chunks, each against the boxes overlapping the chunk's extent.

    A box left out has IoU 0 with the chunk, so an anchor's highest IoU and its first box of
    that IoU (`max(dim=0)` picks the first of a tie) are the Matcher's: the first overlapping
    box when the IoU is > 0, box 0 when every IoU is 0. Low-quality matches need each box's
    best IoU over all anchors, known after a first pass; a second pass marks the anchors that
    reach it (a box of best IoU 0 ties with every anchor it misses, as in the Matcher).

    Args:
        gt_boxes: G boxes (G >= 1); anchors: R anchors; both Boxes or both RotatedBoxes.
    Returns:
        matches: (R,) int64, the box each anchor is matched to;
        match_labels: (R,) int8, the matcher's labels (1 foreground, 0 background, -1 ignored).
    """
    chunks = _anchor_chunks(len(gt_boxes), len(anchors), pairs_per_chunk)
    if len(chunks) <= 1:
        return matcher(box_iou(gt_boxes, anchors))
    gt = gt_boxes.tensor
    matched_vals = anchors.tensor.new_zeros(len(anchors))
    matches = torch.zeros(len(anchors), dtype=torch.int64, device=anchors.device)
    best_per_box = gt.new_zeros(len(gt))  # IoUs are >= 0
    for start, stop in chunks:
        near = _boxes_overlapping(gt, anchors.tensor[start:stop])
        if len(near):
            iou = box_iou(gt_boxes[near], anchors[start:stop])  # (g, C)
            vals, first = iou.max(dim=0)
            matched_vals[start:stop] = vals
            matches[start:stop] = torch.where(vals > 0, near[first], 0)
            best_per_box[near] = torch.maximum(best_per_box[near], iou.max(dim=1).values)
    match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
    for label, low, high in zip(matcher.labels, matcher.thresholds[:-1], matcher.thresholds[1:]):
        match_labels[(matched_vals >= low) & (matched_vals < high)] = label
    if matcher.allow_low_quality_matches:
        zero_best = best_per_box == 0
        num_zero_best = int(zero_best.sum())
        for start, stop in chunks:
            near = _boxes_overlapping(gt, anchors.tensor[start:stop])
            if num_zero_best > int(zero_best[near].sum()):  # a box of best IoU 0 misses this chunk
                match_labels[start:stop] = 1
            elif len(near):
                iou = box_iou(gt_boxes[near], anchors[start:stop])
                match_labels[start:stop][(iou == best_per_box[near][:, None]).any(dim=0)] = 1
    return matches, match_labels


@torch.no_grad()
def label_anchors(anchors: torch.Tensor, gt_instances: List[Instances], matcher: Matcher, num_classes: int):
    """
    Args:
        anchors: (R, 4) XYXY or (R, 5) XYWHA anchors of all levels.
        gt_instances: per image, Instances with gt_boxes (Boxes for XYXY anchors, RotatedBoxes
            for XYWHA ones) and gt_classes.
        matcher: Detectron2's Matcher (labels 1 foreground, 0 background, -1 ignored), applied
            by `match_anchors` in chunks of anchors.
        num_classes: K; the background label.
    Returns:
        gt_labels: (N, R) in {-1 ignored, 0..K-1 class, K background};
        gt_boxes: (N, R, 4 or 5), each anchor's matched ground-truth box (zeros where none).
    """
    anchor_boxes = RotatedBoxes(anchors) if anchors.shape[1] == 5 else Boxes(anchors)
    labels, boxes = [], []
    for gt in gt_instances:
        if gt.gt_boxes.tensor.shape[1] != anchors.shape[1]:
            raise ValueError(
                f"ground-truth boxes of {gt.gt_boxes.tensor.shape[1]} numbers ({type(gt.gt_boxes).__name__}) "
                f"for a model whose anchors have {anchors.shape[1]}: a rotated model (RotatedAnchorGenerator) "
                "trains on RotatedBoxes, a horizontal one on Boxes"
            )
        gt = sanitized_ground_truth(gt)
        if len(gt) == 0:
            labels.append(torch.full((len(anchors),), num_classes, dtype=torch.int64, device=anchors.device))
            boxes.append(torch.zeros_like(anchors))
            continue
        matched_idxs, match_labels = match_anchors(gt.gt_boxes, anchor_boxes, matcher)
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
