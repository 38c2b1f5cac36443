"""
Culling: the pairs of rotated boxes that may overlap, found without looking at the others.

Two boxes can only intersect if their axis-aligned bounding boxes overlap and their enclosing
circles meet. Two bounding boxes overlap in x exactly when the left edge of one lies in the
other's span; with each set sorted by the left edges, the boxes whose left edge lies in a box's
span form one run of that order (two binary searches). Only the pairs of those runs, the pairs
overlapping in x, are tested (y first, then the circles of the pairs left), in chunks of a
bounded number of pairs. Matching 10^5 anchors against hundreds of boxes then computes the
exact IoU of a few pairs per anchor instead of all of them.
"""
import math
from typing import List, Tuple

import torch

# Bounding boxes and circles grow by this fraction so that rounding never culls a pair that
# touches: the exact IoU decides those.
_GROWTH = 1.0 + 1e-6
# At most this many pairs are tested at once (memory: about 60 bytes each).
MAX_PAIRS_PER_CHUNK = 1 << 18


def _extents(boxes: torch.Tensor, growth: float = _GROWTH) -> torch.Tensor:
    """
    Args:
        boxes: (N, 5) rotated boxes (cx, cy, w, h, angle in degrees).
    Returns:
        (N, 5) float64 (cx, cy, half width and half height of the axis-aligned bounding box,
        radius of the enclosing circle), the last three grown by `_GROWTH`.
    """
    boxes = boxes.double()
    theta = boxes[:, 4] * (math.pi / 180)  # deg2rad, bit for bit, in ONNX's ops
    cos, sin = torch.cos(theta).abs(), torch.sin(theta).abs()
    w, h = boxes[:, 2].abs(), boxes[:, 3].abs()
    half_x = 0.5 * growth * (cos * w + sin * h)
    half_y = 0.5 * growth * (sin * w + cos * h)
    radius = 0.5 * growth * torch.sqrt(w * w + h * h)
    return torch.stack([boxes[:, 0], boxes[:, 1], half_x, half_y, radius], dim=1)


def _circles_meet(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """(P,) whether the enclosing circles of the pairs of extents (P, 5), (P, 5) meet."""
    dx, dy = e1[:, 0] - e2[:, 0], e1[:, 1] - e2[:, 1]
    reach = e1[:, 4] + e2[:, 4]
    return dx * dx + dy * dy <= reach * reach


def _runs(e1: torch.Tensor, e2: torch.Tensor, include_equal: bool):
    """
    For each box of e1, the run of e2's boxes, sorted by the left edge of their bounding box,
    whose left edge lies in the box's bounding box in x ([left, right], or (left, right] without
    include_equal): (M,) e2's order, (N,) the first and (N,) the number of positions in that order.
    """
    left2, order2 = torch.sort(e2[:, 0] - e2[:, 2])
    first = torch.searchsorted(left2, e1[:, 0] - e1[:, 2], right=not include_equal)
    stop = torch.searchsorted(left2, e1[:, 0] + e1[:, 2], right=True)
    return order2, first, (stop - first).clamp_min(0)


def _pairs_of_runs(
    e1: torch.Tensor, e2: torch.Tensor, include_equal: bool, max_pairs: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The pairs of `_runs`, whose bounding boxes overlap in x, that overlap in y too and whose
    circles meet, max_pairs at a time (one box at least). A pair is an e1 box and a position in
    e2's sorted order; positions of one box's run are consecutive, so the y test, which drops
    most pairs, gathers only two columns.
    """
    device = e1.device
    order2, first, counts = _runs(e1, e2, include_equal)
    sorted2 = e2.index_select(0, order2)
    y2, half_y2 = sorted2[:, 1].contiguous(), sorted2[:, 3].contiguous()
    ends = torch.cumsum(counts, 0)
    shift = first - (ends - counts)  # a pair's position in the order minus its index overall
    rows: List[torch.Tensor] = [torch.zeros(0, dtype=torch.long, device=device)]
    cols: List[torch.Tensor] = [torch.zeros(0, dtype=torch.long, device=device)]
    row, n = 0, e1.shape[0]
    while row < n:
        done = int(ends[row - 1]) if row > 0 else 0
        fits = int(torch.searchsorted(ends, torch.tensor(done + max_pairs, device=device), right=True))
        row_end = min(max(row + 1, fits), n)
        total = int(ends[row_end - 1]) - done
        if total > 0:
            run = counts[row:row_end]
            position = torch.arange(done, done + total, device=device)
            position += torch.repeat_interleave(shift[row:row_end], run, output_size=total)
            y1 = torch.repeat_interleave(e1[row:row_end, 1], run, output_size=total)
            half_y1 = torch.repeat_interleave(e1[row:row_end, 3], run, output_size=total)
            near = (y1 - y2.index_select(0, position)).abs() <= half_y1 + half_y2.index_select(0, position)
            near = near.nonzero()[:, 0]
            box = torch.repeat_interleave(torch.arange(row, row_end, device=device), run, output_size=total)
            box, position = box.index_select(0, near), position.index_select(0, near)
            meet = _circles_meet(e1.index_select(0, box), sorted2.index_select(0, position)).nonzero()[:, 0]
            rows.append(box.index_select(0, meet))
            cols.append(order2.index_select(0, position.index_select(0, meet)))
        row = row_end
    return torch.cat(rows), torch.cat(cols)


def overlap_candidates(
    boxes1: torch.Tensor, boxes2: torch.Tensor, max_pairs: int = MAX_PAIRS_PER_CHUNK
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        boxes1: (N, 5), boxes2: (M, 5) rotated boxes.
    Returns:
        (K,) int64 indices into boxes1 and (K,) into boxes2 of every pair whose bounding boxes
        and enclosing circles overlap: a superset of the intersecting pairs, in no set order.
    """
    e1, e2 = _extents(boxes1), _extents(boxes2)
    if e1.shape[0] == 0 or e2.shape[0] == 0:
        none = torch.zeros(0, dtype=torch.long, device=boxes1.device)
        return none, none
    # Two bounding boxes overlap in x exactly when the left edge of one lies in the other's span:
    # boxes2's left edge in [left1, right1], or boxes1's in (left2, right2] (no pair twice).
    rows, cols = _pairs_of_runs(e1, e2, True, max_pairs)
    cols_after, rows_after = _pairs_of_runs(e2, e1, False, max_pairs)
    return torch.cat([rows, rows_after]), torch.cat([cols, cols_after])


def overlap_candidates_within(boxes: torch.Tensor, max_pairs: int = MAX_PAIRS_PER_CHUNK) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        boxes: (N, 5) rotated boxes.
    Returns:
        (K,), (K,) int64 indices of two different boxes, for every unordered pair that may overlap
        (at least once: in either order, twice where their left edges are equal).
    """
    e = _extents(boxes)
    if e.shape[0] == 0:
        none = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return none, none
    first, second = _pairs_of_runs(e, e, True, max_pairs)
    different = first != second
    return first[different], second[different]
