"""
The rotated NMS of `rotated_nms` in ops that ONNX has, for a whole rotated model exported to ONNX:
the same ranks, kept in the same order.

`_batched_nms_rotated` culls its candidate pairs with binary searches (`searchsorted`) and
sweeps to its fixed point with `bincount`; the TorchScript-based ONNX exporter converts neither.
Here the candidates are the dense (N, N) test of the same culling (bounding boxes overlapping in
x and y, enclosing circles meeting, same class, the first of higher rank), `nonzero` gives the
pairs, and the exact IoU of those pairs (`pairs_over_threshold`, in chunks) keeps the edges over the
threshold. The sweep counts each box's kept higher-ranked neighbours with `scatter_add` (ONNX
ScatterElements with reduction "add", opset 16) in a scripted `while` loop, which the exporter
turns into an ONNX Loop: any image runs to its own fixed point.

The ranking sorts twice (`_stable_descending_order`): an exact stable order from any sort.
Memory: the (N, N) test holds a few bool matrices (N = 5000: 25 MB each), no (N, N) float.
"""
import functools

import torch

from .overlap_candidates import _circles_meet, _extents
from .rotated_iou import EXACT_PAIRS_PER_CHUNK, pairs_over_threshold


def _candidate_pairs(boxes: torch.Tensor, classes: torch.Tensor):
    """
    Args:
        boxes: (N, 5) rotated boxes sorted by decreasing score; classes: (N,) int64.
    Returns:
        (P,) ranks of the higher-ranked and (P,) of the lower-ranked box of every pair of the same
        class whose bounding boxes overlap and whose enclosing circles meet (`overlap_candidates`).
    """
    e = _extents(boxes)
    # Interval tests of (N,) ends, broadcast into bool (N, N) only (no (N, N) float64); the
    # bounding boxes are grown, so these and the culling's tests pass every pair that intersects.
    left, right = e[:, 0] - e[:, 2], e[:, 0] + e[:, 2]
    top, bottom = e[:, 1] - e[:, 3], e[:, 1] + e[:, 3]
    overlap_x = (left[None, :] <= right[:, None]) & (left[:, None] <= right[None, :])
    overlap_y = (top[None, :] <= bottom[:, None]) & (top[:, None] <= bottom[None, :])
    pairs = (overlap_x & overlap_y).nonzero()
    higher, lower = pairs[:, 0], pairs[:, 1]
    # Rank and class on the few pairs left, not as more (N, N) tests.
    kept = (higher < lower) & (classes[higher] == classes[lower])
    higher, lower = higher[kept], lower[kept]
    meet = _circles_meet(e[higher], e[lower])
    return higher[meet], lower[meet]


def _stable_descending_order(scores: torch.Tensor) -> torch.Tensor:
    """
    (N,) the indices of the (N,) scores by decreasing score, equal scores by increasing index:
    `torch.sort(stable=True)`, whose overload the exporter misreads. Any sort puts the runs of
    equal scores in place; a second sort by (run, index), distinct int64 keys, orders each run.
    """
    sorted_scores, order = torch.sort(scores, descending=True)
    new_run = torch.ones_like(order)
    new_run[1:] = (sorted_scores[1:] != sorted_scores[:-1]).long()
    key = torch.cumsum(new_run, 0) * scores.shape[0] + order
    return order[torch.sort(key)[1]]


def _greedy_sweep_by_scatter(n: int, higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which of n ranked boxes greedy NMS keeps, given the suppression edges (E,), (E,)."""
    keep = torch.ones(n, dtype=torch.bool, device=higher.device)
    changed = True
    while changed:
        kept_neighbours = torch.zeros(n, dtype=torch.long, device=higher.device)
        kept_neighbours = kept_neighbours.scatter_add(0, lower, keep[higher].long())
        swept = kept_neighbours == 0
        changed = bool((swept != keep).any())
        keep = swept
    return keep


def batched_nms_rotated_onnx(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float, chunk: int = EXACT_PAIRS_PER_CHUNK
) -> torch.Tensor:
    """
    `batched_nms_rotated` in ONNX's ops: (N, 5) boxes, (N,) scores, (N,) classes -> (K,) int64
    indices of the kept boxes by decreasing score, those of `batched_nms_rotated`. The exact IoU
    runs `chunk` pairs at a time (an ONNX Loop): memory stays bounded when many boxes overlap.
    """
    order = _stable_descending_order(scores)
    ranked, classes = boxes[order], idxs[order].long()
    higher, lower = _candidate_pairs(ranked, classes)
    over = pairs_over_threshold(ranked, higher, lower, iou_threshold, chunk)
    keep = _greedy_sweep_by_scatter(boxes.shape[0], higher[over], lower[over])
    return order[keep]


@functools.lru_cache(maxsize=1)
def scripted_batched_nms_rotated_onnx():
    """`batched_nms_rotated_onnx` compiled, recorded as one call (a Loop in ONNX) while tracing."""
    return torch.jit.script(batched_nms_rotated_onnx)
