"""
Whether two detectors' outputs on one image are the same detections: compared as sets (class,
IoU, score), not rank by rank, so that near-tied scores which swap places, or which decide the
last detection kept, do not make equal models look different. Rotated boxes (XYWHA) are
compared by their exact rotated IoU (`retina_plugin.ops.pairwise_iou_rotated`).
"""
from typing import Dict, Tuple, Union

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou

from .ops import pairwise_iou_rotated

Detections = Union[Instances, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _unpack(detections: Detections):
    if isinstance(detections, Instances):
        return detections.pred_boxes.tensor, detections.scores, detections.pred_classes
    boxes, scores, classes = detections
    return boxes, scores, classes


def compare_detections(
    candidate: Detections, reference: Detections, min_iou: float = 0.99, score_atol: float = 1e-4
) -> Dict[str, object]:
    """
    Match each reference detection to a candidate detection of the same class with IoU >=
    `min_iou` and a score within `score_atol` (greedily, best score first). A detection left
    unmatched is a *tie*, and allowed, when its score is within `score_atol` of its list's
    lowest score (the top-k or per-image cap kept one of two near-equal scores), or when the
    other list holds a detection of its class overlapping it (IoU > 0.5) with a score within
    `score_atol` (NMS kept the other of two near-equal boxes).

    Args:
        candidate, reference: Instances (pred_boxes, scores, pred_classes) or
            (boxes (R, 4) XYXY or (R, 5) XYWHA, scores (R,), classes (R,)); both of one kind.
    Returns:
        {"count": (candidate R, reference R), "matched", "ties", "unmatched" (not ties),
        "min_iou" and "max_score_diff" over matched pairs, "match": no unmatched detection}.
    """
    (boxes, scores, classes), (ref_boxes, ref_scores, ref_classes) = _unpack(candidate), _unpack(reference)
    boxes, ref_boxes = boxes.detach().float().cpu(), ref_boxes.detach().float().cpu()
    scores, ref_scores = scores.detach().float().cpu(), ref_scores.detach().float().cpu()
    classes, ref_classes = classes.detach().long().cpu(), ref_classes.detach().long().cpu()

    if boxes.shape[-1] != ref_boxes.shape[-1]:
        raise ValueError(f"boxes of {boxes.shape[-1]} and of {ref_boxes.shape[-1]} numbers cannot be compared")
    rotated = boxes.shape[-1] == 5
    iou = pairwise_iou_rotated(ref_boxes, boxes) if rotated else pairwise_iou(Boxes(ref_boxes), Boxes(boxes))  # (R_ref, R)
    same_class = ref_classes[:, None] == classes[None, :]
    close_score = (ref_scores[:, None] - scores[None, :]).abs() <= score_atol
    candidates = same_class & close_score & (iou >= min_iou)
    taken = torch.zeros(len(boxes), dtype=torch.bool)
    ref_matched = torch.zeros(len(ref_boxes), dtype=torch.bool)
    ious, score_diffs = [], []
    for i in ref_scores.argsort(descending=True).tolist():
        options = torch.nonzero(candidates[i] & ~taken).squeeze(1)
        if len(options) == 0:
            continue
        j = options[iou[i, options].argmax()].item()
        taken[j] = ref_matched[i] = True
        ious.append(iou[i, j].item())
        score_diffs.append(abs(ref_scores[i].item() - scores[j].item()))

    def is_tie(score, own_scores, overlaps_other):
        at_cut = len(own_scores) > 0 and score - own_scores.min().item() <= score_atol
        return at_cut or bool(overlaps_other.any())

    # an unmatched detection overlapping a near-equal one of its class in the other list
    nms_rival = same_class & close_score & (iou > 0.5)
    ties = unmatched = 0
    for i in torch.nonzero(~ref_matched).squeeze(1).tolist():
        if is_tie(ref_scores[i].item(), ref_scores, nms_rival[i]):
            ties += 1
        else:
            unmatched += 1
    for j in torch.nonzero(~taken).squeeze(1).tolist():
        if is_tie(scores[j].item(), scores, nms_rival[:, j]):
            ties += 1
        else:
            unmatched += 1
    return {
        "count": (len(boxes), len(ref_boxes)),
        "matched": len(ious),
        "ties": ties,
        "unmatched": unmatched,
        "min_iou": min(ious) if ious else None,
        "max_score_diff": max(score_diffs) if score_diffs else None,
        "match": unmatched == 0,
    }
