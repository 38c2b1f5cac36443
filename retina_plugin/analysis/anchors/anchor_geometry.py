"""
The geometry of a box against anchors on a grid, in closed form: along each axis the distance
from a box centre to the nearest anchor centre of each level (`nearest_centre_distances`), the
IoU of a box with anchor shapes placed at given distances (`iou_at_distances`), and so a box's
best IoU with anchors of given shapes on the grid (`best_iou_on_grid`). The search scores
candidate settings with these; the coverage uses them to skip levels a box cannot reach.
"""
from typing import Sequence, Tuple

import torch

__all__ = ["nearest_centre_distances", "iou_at_distances", "best_iou_on_grid"]


def nearest_centre_distances(boxes: torch.Tensor, grid_sizes: torch.Tensor, strides: Sequence[int],
                             offset: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    boxes: (N, 4) XYXY; grid_sizes: (N, L, 2) the (Hi, Wi) of each level in each box's image;
    anchor centres at (offset + i) * stride. Returns (N, L) distances along x and (N, L) along
    y from each box centre to the nearest anchor centre of each level (float64).
    """
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).double()  # (N, 2) as (x, y)
    distances = []
    for level, stride in enumerate(strides):
        i = torch.floor(centres / stride - offset).long()
        limit = grid_sizes[:, level].flip(1)[:, :, None] - 1  # (N, 2, 1) as (Wi - 1, Hi - 1)
        grid = (offset + torch.stack([i, i + 1], 2).clamp(min=0).minimum(limit)) * stride
        distances.append((grid - centres[:, :, None]).abs().amin(2))
    distances = torch.stack(distances, 1)  # (N, L, 2)
    return distances[..., 0], distances[..., 1]


def iou_at_distances(widths, heights, dx, dy, level_cell_anchors) -> torch.Tensor:
    """
    widths, heights: (N,) float64 box sizes; dx, dy: (N, L) distances along x and y from the box
    centre to an anchor centre on each level; level_cell_anchors: per level the (A, 4) anchors
    of one location. Returns (N, L, A) the IoU of the box with each of them placed there.
    """
    cells = torch.stack([c.double() for c in level_cell_anchors])  # (L, A, 4)
    anchor_w, anchor_h = cells[..., 2] - cells[..., 0], cells[..., 3] - cells[..., 1]
    w, h = widths[:, None, None], heights[:, None, None]
    # Overlap of two intervals of lengths a and b whose centres are d apart.
    overlap_x = torch.minimum(torch.minimum(w, anchor_w), (w + anchor_w) / 2 - dx[..., None]).clamp(min=0)
    overlap_y = torch.minimum(torch.minimum(h, anchor_h), (h + anchor_h) / 2 - dy[..., None]).clamp(min=0)
    inter = overlap_x * overlap_y  # (N, L, A)
    return inter / (w * h + anchor_w * anchor_h - inter)


def best_iou_on_grid(boxes: torch.Tensor, grid_sizes: torch.Tensor, strides: Sequence[int], offset: float,
                     level_cell_anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """
    The best IoU of each box with anchors of the given shapes placed on the anchor grid of its
    image, in closed form. For a box and one anchor shape, the intersection is the product of
    the overlaps along x and along y; each depends only on the distance of the anchor centre
    from the box centre on that axis and does not grow with it, so the best anchor of that
    shape is the one at the grid point nearest the box centre, and the IoU grows with the
    intersection. This is the search's fast path; the analysis itself matches boxes to the
    generator's real anchors (`anchor_coverage.match_boxes_to_anchors`).

    Args:
        boxes: (N, 4) XYXY in resized pixels.
        grid_sizes: (N, L, 2) the (Hi, Wi) of each level in each box's image.
        strides: the L strides; offset: the anchor offset (centres at (offset + i) * stride).
        level_cell_anchors: per level the (A, 4) anchors of one location, centred on (0, 0).
    Returns:
        (N,) float64.
    """
    dx, dy = nearest_centre_distances(boxes, grid_sizes, strides, offset)
    boxes = boxes.double()
    iou = iou_at_distances(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], dx, dy, level_cell_anchors)
    return iou.flatten(1).amax(1)
