"""
Exact IoU of rotated boxes in torch, for where Detectron2's compiled `pairwise_iou_rotated` is
missing (its `detectron2._C` does not load here) or cannot go (TorchScript, ONNX).

`pairwise_iou_rotated` culls first (`overlap_candidates`) and computes the exact IoU
(`rotated_iou_of_pairs`) of the candidate pairs only, in chunks; a traced or scripted call takes
the dense path, every pair at once in fixed shapes, which gives the same matrix.
"""
from typing import List

import torch

from .overlap_candidates import overlap_candidates
from .rotated_intersection import rotated_iou_of_pairs

# Pairs per call of the exact IoU (memory: about 1 kB each in float64).
EXACT_PAIRS_PER_CHUNK = 1 << 13


def matched_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """
    Args:
        boxes1, boxes2: (N, 5) rotated boxes (cx, cy, w, h, angle in degrees), pair by pair.
    Returns:
        (N,) IoU of boxes1[i] with boxes2[i], in boxes1's dtype.
    """
    if torch.jit.is_scripting():
        return rotated_iou_of_pairs(boxes1, boxes2).to(boxes1.dtype)
    parts = [
        rotated_iou_of_pairs(boxes1[k:k + EXACT_PAIRS_PER_CHUNK], boxes2[k:k + EXACT_PAIRS_PER_CHUNK])
        for k in range(0, boxes1.shape[0], EXACT_PAIRS_PER_CHUNK)
    ]
    if len(parts) == 0:
        return torch.zeros(0, dtype=boxes1.dtype, device=boxes1.device)
    return torch.cat(parts).to(boxes1.dtype)


def pairs_over_threshold(
    boxes: torch.Tensor, first: torch.Tensor, second: torch.Tensor, iou_threshold: float, chunk: int = EXACT_PAIRS_PER_CHUNK
) -> torch.Tensor:
    """
    Args:
        boxes: (N, 5) rotated boxes; first, second: (P,) indices into boxes, pair by pair.
    Returns:
        (P,) bool: the exact IoU (float64) of boxes[first[i]] and boxes[second[i]] is over
        iou_threshold. Computed `chunk` pairs at a time, so memory stays bounded however many
        pairs there are; it compiles with `torch.jit.script` (an ONNX Loop when exported).
    """
    over: List[torch.Tensor] = [torch.zeros(0, dtype=torch.bool, device=boxes.device)]
    for i in range((first.shape[0] + chunk - 1) // chunk):
        a, b = first[i * chunk:(i + 1) * chunk], second[i * chunk:(i + 1) * chunk]
        over.append(rotated_iou_of_pairs(boxes[a], boxes[b]) > iou_threshold)
    return torch.cat(over)


def dense_pairwise_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """The exact IoU of every pair at once, (N, 5) x (M, 5) -> (N, M): no data-dependent shape."""
    n, m = boxes1.shape[0], boxes2.shape[0]
    first = boxes1[:, None, :].expand(n, m, 5).reshape(n * m, 5)
    second = boxes2[None, :, :].expand(n, m, 5).reshape(n * m, 5)
    return rotated_iou_of_pairs(first, second).to(boxes1.dtype).reshape(n, m)


def pairwise_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """
    Detectron2's `detectron2.layers.pairwise_iou_rotated`, exact, in torch.

    Args:
        boxes1: (N, 5), boxes2: (M, 5) rotated boxes (cx, cy, w, h, angle in degrees
            counter-clockwise), as `RotatedBoxes.tensor` holds them.
    Returns:
        (N, M) IoU in boxes1's dtype; 0 for a box of no area.
    """
    if torch.jit.is_scripting():
        return dense_pairwise_iou_rotated(boxes1, boxes2)
    if torch.jit.is_tracing():  # (apart: a scripted function must not compile is_tracing)
        return dense_pairwise_iou_rotated(boxes1, boxes2)
    n, m = boxes1.shape[0], boxes2.shape[0]
    iou = torch.zeros(n * m, dtype=boxes1.dtype, device=boxes1.device)
    rows, cols = overlap_candidates(boxes1, boxes2)
    if rows.numel() > 0:
        values = matched_iou_rotated(boxes1.index_select(0, rows), boxes2.index_select(0, cols))
        iou.index_copy_(0, rows * m + cols, values)
    return iou.reshape(n, m)
