"""
Greedy non-maximum suppression of rotated boxes, exact, in torch: Detectron2's `nms_rotated` and
`batched_nms_rotated` without its compiled ops.

The boxes are sorted by decreasing score (a stable sort: equal scores keep their index order);
a box is suppressed when its IoU with a kept box of higher rank (and, batched, of its class) is
over the threshold. Only the pairs that `overlap_candidates_within` finds get an exact IoU; the pairs
over the threshold are the edges of a graph, and the greedy result is the one fixed point of
"a box is kept when none of its higher-ranked neighbours is kept", reached by sweeping all
edges at once until nothing changes (a sweep decides at least the next box in rank; clusters
of overlapping boxes settle in a few sweeps).

Classes are kept apart by leaving pairs of different classes out of the candidates, not by
Detectron2's trick of shifting each class's boxes by an offset: the shifted coordinates are
rounded in float32, so their IoU is not the IoU of the boxes.

Both functions compile with `torch.jit.script`, so a scripted or exported rotated model can
call them; exported to ONNX, a traced model calls `rotated_nms_onnx`'s form of the same NMS.
"""
import functools

import torch

from .overlap_candidates import overlap_candidates_within
from .rotated_iou import EXACT_PAIRS_PER_CHUNK, pairs_over_threshold
from .rotated_nms_onnx import scripted_batched_nms_rotated_onnx


def _suppression_edges(
    boxes: torch.Tensor, classes: torch.Tensor, iou_threshold: float, chunk: int = EXACT_PAIRS_PER_CHUNK
):
    """
    Args:
        boxes: (N, 5) rotated boxes sorted by decreasing score; classes: (N,) int64.
    Returns:
        (E,) ranks of the higher-ranked box and (E,) of the lower-ranked one, for every pair of
        the same class whose IoU is over iou_threshold.
    """
    first, second = overlap_candidates_within(boxes)
    same = classes[first] == classes[second]
    first, second = first[same], second[same]
    higher, lower = torch.minimum(first, second), torch.maximum(first, second)
    suppresses = pairs_over_threshold(boxes, higher, lower, iou_threshold, chunk)
    return higher[suppresses], lower[suppresses]


def _greedy_sweep(n: int, higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which of n ranked boxes greedy NMS keeps, given the suppression edges (E,), (E,)."""
    keep = torch.ones(n, dtype=torch.bool, device=higher.device)
    for _ in range(n + 1):
        suppressed = torch.bincount(lower[keep[higher]], minlength=n) > 0
        if torch.equal(~suppressed, keep):
            break
        keep = ~suppressed
    return keep


def batched_nms_rotated(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """
    Args:
        boxes: (N, 5) rotated boxes (cx, cy, w, h, angle in degrees); scores: (N,);
        idxs: (N,) the class of each box (boxes of different classes never suppress each other).
        iou_threshold: a box whose IoU with a kept higher-scoring box is over this is dropped.
    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    if torch.jit.is_scripting():
        return _batched_nms_rotated(boxes, scores, idxs, iou_threshold)
    if torch.jit.is_tracing():
        # Traced, the sweep's loop would keep the traced image's iterations; the compiled
        # function is recorded as one call, which runs on any image (export). ONNX gets the
        # same NMS in the ops it has (an ONNX Loop).
        if torch.onnx.is_in_onnx_export():
            return scripted_batched_nms_rotated_onnx()(boxes, scores, idxs, float(iou_threshold))
        return _scripted_batched_nms_rotated()(boxes, scores, idxs, float(iou_threshold))
    return _batched_nms_rotated(boxes, scores, idxs, iou_threshold)


def _batched_nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True)[1]
    ranked, classes = boxes[order], idxs[order].long()
    higher, lower = _suppression_edges(ranked, classes, iou_threshold)
    return order[_greedy_sweep(boxes.shape[0], higher, lower)]


@functools.lru_cache(maxsize=1)
def _scripted_batched_nms_rotated():
    return torch.jit.script(_batched_nms_rotated)


def nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """
    Args:
        boxes: (N, 5) rotated boxes (cx, cy, w, h, angle in degrees); scores: (N,).
        iou_threshold: a box whose IoU with a kept higher-scoring box is over this is dropped.
    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    classes = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
    return batched_nms_rotated(boxes, scores, classes, iou_threshold)
