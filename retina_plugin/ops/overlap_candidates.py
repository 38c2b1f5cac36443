"""
Culling: the pairs of rotated boxes that may overlap, found without looking at the others.

Two boxes can only intersect if their axis-aligned bounding boxes overlap and their enclosing
circles meet. The boxes of one set (the one whose widest box is narrower) are sorted by the left
edge of their bounding box, so those whose bounding box may overlap a box of the other set in x
form one run of that order (two binary searches); only the pairs of those runs are tested, in
chunks of a bounded number of pairs. Matching 10^5 anchors against hundreds of boxes then computes the exact
IoU of a few pairs per anchor instead of all of them.
"""
from typing import List, Tuple

import torch

# Bounding boxes and circles grow by this fraction so that rounding never culls a pair that
# touches: the exact IoU decides those.
_GROWTH = 1.0 + 1e-6
# At most this many pairs are tested at once (memory: about 150 bytes each).
MAX_PAIRS_PER_CHUNK = 1 << 20


def _extents(boxes: torch.Tensor, growth: float = _GROWTH) -> torch.Tensor:
    """
    Args:
        boxes: (N, 5) rotated boxes (cx, cy, w, h, angle in degrees).
    Returns:
        (N, 5) float64 (cx, cy, half width and half height of the axis-aligned bounding box,
        radius of the enclosing circle), the last three grown by `_GROWTH`.
    """
    boxes = boxes.double()
    theta = torch.deg2rad(boxes[:, 4])
    cos, sin = torch.cos(theta).abs(), torch.sin(theta).abs()
    w, h = boxes[:, 2].abs(), boxes[:, 3].abs()
    half_x = 0.5 * growth * (cos * w + sin * h)
    half_y = 0.5 * growth * (sin * w + cos * h)
    radius = 0.5 * growth * torch.sqrt(w * w + h * h)
    return torch.stack([boxes[:, 0], boxes[:, 1], half_x, half_y, radius], dim=1)


def _may_overlap(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """(P,) whether the pairs of extents (P, 5), (P, 5) have overlapping bounding boxes and circles."""
    dx, dy = e1[:, 0] - e2[:, 0], e1[:, 1] - e2[:, 1]
    reach = e1[:, 4] + e2[:, 4]
    return (dx.abs() <= e1[:, 2] + e2[:, 2]) & (dy.abs() <= e1[:, 3] + e2[:, 3]) & (dx * dx + dy * dy <= reach * reach)


def _runs(e1: torch.Tensor, e2: torch.Tensor):
    """
    For each box of e1, the run of e2's boxes, sorted by their bounding box's left edge, whose
    bounding box may overlap it in x: (M,) e2's order, (N,) the first and (N,) the number of
    positions in that order.
    """
    left2, order2 = torch.sort(e2[:, 0] - e2[:, 2])
    widest2 = 2 * e2[:, 2].max()
    first = torch.searchsorted(left2, e1[:, 0] - e1[:, 2] - widest2, right=False)
    stop = torch.searchsorted(left2, e1[:, 0] + e1[:, 2], right=True)
    return order2, first, (stop - first).clamp_min(0)


def _pairs_of_runs(
    e1: torch.Tensor, e2: torch.Tensor, max_pairs: int
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """The pairs of `_runs` that pass `_may_overlap`, tested max_pairs at a time (one box at least)."""
    device = e1.device
    order2, first, counts = _runs(e1, e2)
    ends = torch.cumsum(counts, 0)
    rows: List[torch.Tensor] = [torch.zeros(0, dtype=torch.long, device=device)]
    cols: List[torch.Tensor] = [torch.zeros(0, dtype=torch.long, device=device)]
    row, n = 0, e1.shape[0]
    while row < n:
        done = int(ends[row - 1]) if row > 0 else 0
        fits = int(torch.searchsorted(ends, torch.tensor(done + max_pairs, device=device), right=True))
        row_end = min(max(row + 1, fits), n)
        total = int(ends[row_end - 1]) - done
        if total > 0:
            i = torch.repeat_interleave(torch.arange(row, row_end, device=device), counts[row:row_end])
            run_start = ends[i] - counts[i] - done  # where box i's pairs start in this chunk
            j = order2[first[i] + torch.arange(total, device=device) - run_start]
            keep = _may_overlap(e1[i], e2[j])
            rows.append(i[keep])
            cols.append(j[keep])
        row = row_end
    return rows, cols


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
    # The runs are shorter in the order of the set whose widest box is narrower.
    if e1[:, 2].max() < e2[:, 2].max():
        cols, rows = _pairs_of_runs(e2, e1, max_pairs)
    else:
        rows, cols = _pairs_of_runs(e1, e2, max_pairs)
    return torch.cat(rows), torch.cat(cols)
