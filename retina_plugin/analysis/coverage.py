"""
Matching a dataset's boxes to a config's anchors as training labels them.

Labels are Detectron2's Matcher's, built as RetinaNetPlugin builds it (MODEL.RETINANET.
IOU_THRESHOLDS, IOU_LABELS, MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES), as
`retina_plugin.modeling.matching.label_anchors` applies it. The IoU is computed only for the
(box, anchor) pairs that can change a foreground label: pairs that cannot overlap, or cannot
reach the lower of the foreground threshold and the lowest best IoU of the image's boxes, are
skipped, so an 800x1333 image (~200k anchors) costs a few thousand IoUs per box, not 200k, and
the pairs are taken in chunks that bound the memory. tests/analysis/test_coverage.py checks the
result against `label_anchors` on every anchor. That, calling `label_anchors` on every anchor of
an 800x1333 image, measured 5-14x slower (7 to 1000 boxes) with up to 14x the memory (4.6 GB
for 1000 boxes); on the embedded dataset's 256 px images it was ~10% faster.
"""
from typing import Dict, Tuple

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou

from ..modeling.matching import build_anchor_matcher
from .anchors import AnchorGrid, AnchorSetting, _iou_at_distances, _nearest_centre_distances
from .boxes import AnchorCoverageError, ResizedBoxes
from .statistics import AnchorCoverage

__all__ = ["match_boxes_to_anchors", "measure_anchor_coverage"]

# (box, anchor) pairs whose IoU is computed at once; bounds the peak memory to ~150 MB.
PAIRS_PER_CHUNK = 1 << 21


def _level_windows(boxes: torch.Tensor, stride: int, offset: float, cells: torch.Tensor, size):
    """
    For each box, the range of anchor locations on one level whose anchors can overlap it:
    those whose centre (offset + i) * stride lies within the box widened by the largest
    half-extent of the level's anchors. Returns (x0, nx, y0, ny), each (G,) int64.
    """
    height, width = size
    boxes = boxes.double()
    half_w = float(cells[:, [0, 2]].abs().max())
    half_h = float(cells[:, [1, 3]].abs().max())
    eps = 1e-6  # widen by a hair: a pair too many has IoU 0, a pair too few would be wrong
    x0 = torch.ceil((boxes[:, 0] - half_w) / stride - offset - eps).long().clamp(min=0)
    x1 = torch.floor((boxes[:, 2] + half_w) / stride - offset + eps).long().clamp(max=width - 1)
    y0 = torch.ceil((boxes[:, 1] - half_h) / stride - offset - eps).long().clamp(min=0)
    y1 = torch.floor((boxes[:, 3] + half_h) / stride - offset + eps).long().clamp(max=height - 1)
    return x0, (x1 - x0 + 1).clamp(min=0), y0, (y1 - y0 + 1).clamp(min=0)


def _level_pairs(window, width: int, num_cell: int, first_anchor: int, first_box: int):
    """The (box index, anchor index) pairs of one level for the boxes of `window` (a chunk)."""
    x0, nx, y0, ny = window
    cells = nx * ny
    box = torch.repeat_interleave(torch.arange(len(cells)), cells)
    k = torch.arange(int(cells.sum())) - torch.repeat_interleave(torch.cumsum(cells, 0) - cells, cells)
    nx_rep = nx[box]
    location = (y0[box] + k // nx_rep) * width + x0[box] + k % nx_rep
    anchor = first_anchor + (location[:, None] * num_cell + torch.arange(num_cell)).reshape(-1)
    return (box + first_box).repeat_interleave(num_cell), anchor


def match_boxes_to_anchors(boxes: torch.Tensor, grid: AnchorGrid, image_size: Tuple[int, int],
                           matcher: Matcher, fg_threshold: float) -> Dict[str, torch.Tensor]:
    """
    Match the ground-truth boxes of one image to all anchors of `grid` as RetinaNetPlugin's
    `label_anchors` does (Detectron2's `Matcher` on the box-anchor IoU), with the IoU computed
    only for the (box, anchor) pairs that can matter, chunked over boxes.

    Args:
        boxes: (G, 4) float32 XYXY boxes of one image, in resized pixels.
        image_size: the resized (height, width).
        matcher: the Matcher of training; `fg_threshold` its foreground threshold.
    Returns:
        dict with "best_iou" (G,) each box's highest IoU with any anchor, "best_anchor" (G, 4)
        that anchor (the first one of that IoU), "best_level" (G,) its level, "num_fg" (G, L)
        the anchors of each level with IoU >= fg_threshold with the box, "num_positive" (G, L)
        the anchors the matcher labels foreground and assigns to the box, "every_anchor_positive"
        () bool, whether the matcher labels every anchor foreground (a box overlapping no anchor
        does that, with low-quality matches on).
    """
    num_levels, num_boxes = len(grid.strides), len(boxes)
    if num_boxes == 0:
        return {
            "best_iou": torch.zeros(0),
            "best_anchor": torch.zeros(0, 4),
            "best_level": torch.zeros(0, dtype=torch.int64),
            "num_fg": torch.zeros(0, num_levels, dtype=torch.int64),
            "num_positive": torch.zeros(0, num_levels, dtype=torch.int64),
            "every_anchor_positive": torch.tensor(False),
        }
    level_anchors = grid.anchors(image_size)
    sizes = grid.feature_sizes(image_size)
    all_anchors = torch.cat(level_anchors)
    num_anchors = len(all_anchors)
    level_counts = torch.tensor([len(a) for a in level_anchors])
    level_first = (torch.cumsum(level_counts, 0) - level_counts).tolist()
    anchor_level = torch.repeat_interleave(torch.arange(num_levels), level_counts)

    anchor_max = torch.zeros(num_anchors)  # the Matcher's matched_vals and matches
    anchor_match = torch.zeros(num_anchors, dtype=torch.int64)
    low_quality = torch.zeros(num_anchors, dtype=torch.bool)
    best_iou = torch.zeros(num_boxes)
    best_index = torch.zeros(num_boxes, dtype=torch.int64)
    num_fg = torch.zeros(num_boxes * num_levels, dtype=torch.int64)

    # Pairs of IoU below `reach` change neither a positive label nor the box it goes to (a
    # positive anchor's highest IoU is >= fg_threshold or a box's best IoU), so the levels where
    # a box cannot reach it, even on an anchor centred on it, are skipped.
    widths, heights = (boxes[:, 2] - boxes[:, 0]).double(), (boxes[:, 3] - boxes[:, 1]).double()
    dx, dy = _nearest_centre_distances(boxes, torch.tensor(sizes).expand(num_boxes, -1, -1), grid.strides, grid.offset)
    best_possible = _iou_at_distances(widths, heights, dx, dy, grid.level_cell_anchors).flatten(1).amax(1)
    centred = _iou_at_distances(widths, heights, 0 * dx, 0 * dy, grid.level_cell_anchors).amax(2)  # (G, L)
    reach = min(fg_threshold, float(best_possible.min())) * (1 - 1e-3)
    windows = []
    for level, (stride, cells, size) in enumerate(zip(grid.strides, grid.level_cell_anchors, sizes)):
        x0, nx, y0, ny = _level_windows(boxes, stride, grid.offset, cells, size)
        windows.append((x0, nx * (centred[:, level] >= reach), y0, ny))
    pair_counts = sum(w[1] * w[3] * len(c) for w, c in zip(windows, grid.level_cell_anchors))
    chunk_ids = (torch.cumsum(pair_counts, 0) - pair_counts) // PAIRS_PER_CHUNK
    chunk_sizes = torch.unique_consecutive(chunk_ids, return_counts=True)[1].tolist()
    start = 0
    for chunk_size in chunk_sizes:
        stop = start + chunk_size
        pairs = [
            _level_pairs([t[start:stop] for t in window], size[1], len(cells), first, start)
            for window, size, cells, first in zip(windows, sizes, grid.level_cell_anchors, level_first)
        ]
        box_idx = torch.cat([p[0] for p in pairs])
        anchor_idx = torch.cat([p[1] for p in pairs])
        iou = matched_pairwise_iou(Boxes(boxes[box_idx]), Boxes(all_anchors[anchor_idx]))

        # Per box: all pairs of a box are in its chunk.
        local = box_idx - start
        chunk_best = torch.zeros(chunk_size).scatter_reduce(0, local, iou, "amax")
        at_best = iou == chunk_best[local]
        best_iou[start:stop] = chunk_best
        best_index[start:stop] = torch.full((chunk_size,), num_anchors).scatter_reduce(
            0, local[at_best], anchor_idx[at_best], "amin"
        )
        low_quality[anchor_idx[at_best & (iou > 0)]] = True
        fg = iou >= fg_threshold
        num_fg += torch.bincount(box_idx[fg] * num_levels + anchor_level[anchor_idx[fg]],
                                 minlength=num_boxes * num_levels)

        # Per anchor: the highest IoU and, among boxes tying for it, the first box, as
        # `max(dim=0)` in the Matcher; a later chunk (later boxes) wins only when higher.
        chunk_max = torch.zeros(num_anchors).scatter_reduce(0, anchor_idx, iou, "amax")
        at_max = iou == chunk_max[anchor_idx]
        chunk_match = torch.full((num_anchors,), num_boxes).scatter_reduce(
            0, anchor_idx[at_max], box_idx[at_max], "amin"
        )
        higher = chunk_max > anchor_max
        anchor_max = torch.where(higher, chunk_max, anchor_max)
        anchor_match = torch.where(higher, chunk_match, anchor_match)
        start = stop

    # The Matcher's label 1 (foreground) from each anchor's highest IoU, then its low-quality matches.
    positive = torch.zeros(num_anchors, dtype=torch.bool)
    for label, low, high in zip(matcher.labels, matcher.thresholds[:-1], matcher.thresholds[1:]):
        if label == 1:
            positive |= (anchor_max >= low) & (anchor_max < high)
    every_anchor_positive = False
    if matcher.allow_low_quality_matches:
        positive |= low_quality
        # A box whose best IoU is 0 "ties" with every anchor: the Matcher labels them all 1.
        every_anchor_positive = bool((best_iou == 0).any())
        if every_anchor_positive:
            positive[:] = True
    num_positive = torch.bincount(
        anchor_match[positive] * num_levels + anchor_level[positive], minlength=num_boxes * num_levels
    )
    best_index = best_index.clamp(max=num_anchors - 1)  # a box without pairs keeps the sentinel
    return {
        "best_iou": best_iou,
        "best_anchor": all_anchors[best_index],
        "best_level": anchor_level[best_index],
        "num_fg": num_fg.view(num_boxes, num_levels),
        "num_positive": num_positive.view(num_boxes, num_levels),
        "every_anchor_positive": torch.tensor(every_anchor_positive),
    }


def _iou_thresholds(cfg) -> Tuple[float, float]:
    """
    (foreground, background) IoU thresholds of the Matcher of MODEL.RETINANET.IOU_THRESHOLDS and
    IOU_LABELS, whose interval k is [t_k, t_k+1) with t_0 = 0: foreground from the start of the
    first interval labelled 1, background below the end of the leading intervals labelled 0.
    """
    node = cfg.MODEL.RETINANET
    labels = list(node.IOU_LABELS)
    if 1 not in labels:
        raise AnchorCoverageError(
            f"cfg.MODEL.RETINANET.IOU_LABELS = {labels}: no IoU interval is labelled 1 (foreground), "
            f"so no anchor is foreground by IoU (IOU_THRESHOLDS {list(node.IOU_THRESHOLDS)})"
        )
    starts = [0.0] + [float(t) for t in node.IOU_THRESHOLDS]
    background_end = next(k for k, label in enumerate(labels) if label != 0)
    return starts[labels.index(1)], starts[background_end]


def measure_anchor_coverage(resized: ResizedBoxes, grid: AnchorGrid, cfg) -> AnchorCoverage:
    """Match every box of `resized` to the anchors of `grid` with the Matcher of `cfg`."""
    fg_threshold, bg_threshold = _iou_thresholds(cfg)
    matcher = build_anchor_matcher(cfg)  # the Matcher RetinaNetPlugin.from_config builds
    results = [
        match_boxes_to_anchors(boxes, grid, size, matcher, fg_threshold)
        for boxes, size in zip(resized.boxes, resized.image_sizes)
    ]
    anchors = {"generator": cfg.MODEL.ANCHOR_GENERATOR.NAME, **AnchorSetting.from_config(cfg).to_dict()}

    def cat(key):
        return torch.cat([r[key] for r in results])

    return AnchorCoverage(
        anchors=anchors,
        level_names=grid.level_names,
        strides=grid.strides,
        fg_threshold=fg_threshold,
        bg_threshold=bg_threshold,
        allow_low_quality_matches=bool(cfg.MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES),
        image_index=torch.repeat_interleave(torch.arange(len(resized.boxes)),
                                            torch.tensor([len(b) for b in resized.boxes])),
        boxes=torch.cat(resized.boxes),
        best_iou=cat("best_iou"),
        best_anchor=cat("best_anchor"),
        best_level=cat("best_level"),
        num_fg=cat("num_fg"),
        num_positive=cat("num_positive"),
        images_with_every_anchor_positive=int(sum(bool(r["every_anchor_positive"]) for r in results)),
    )
