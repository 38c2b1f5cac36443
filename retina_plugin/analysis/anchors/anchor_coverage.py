"""
Matching a dataset's boxes to a config's anchors as training labels them.

Labels are Detectron2's Matcher's, built as RetinaNetPlugin builds it (MODEL.RETINANET.
IOU_THRESHOLDS, IOU_LABELS, MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES), as
`retina_plugin.modeling.matching.label_anchors` applies it. The IoU is computed only for the
(box, anchor) pairs that can change a foreground label: pairs that cannot overlap, or cannot
reach the lower of the foreground threshold and the lowest best IoU of the image's boxes, are
skipped, so an 800x1333 image (~200k anchors) costs a few thousand IoUs per box, not 200k, and
the pairs are taken in chunks that bound the memory. tests/analysis/anchors/test_anchor_coverage.py
checks the result against `label_anchors` on every anchor. Calling `label_anchors` on every
anchor of an 800x1333 image measured 5-14x slower (7 to 1000 boxes) with up to 14x the memory
(4.6 GB for 1000 boxes); on the embedded dataset's 256 px images it was ~10% faster.

`match_boxes_to_anchors` runs in phases, each a function below (its docstring says "Phase n").
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou

from ...modeling.matching import build_anchor_matcher
from .anchor_geometry import iou_at_distances, nearest_centre_distances
from .anchor_settings import AnchorGrid, AnchorSetting
from .coverage_statistics import AnchorCoverage
from .resized_boxes import AnchorCoverageError, ResizedBoxes

__all__ = [
    "AnchorLayout", "MatchTotals", "anchor_layout", "candidate_windows", "chunk_sizes", "chunk_pairs",
    "matcher_positives", "positives_per_box", "match_boxes_to_anchors", "matcher_iou_thresholds",
    "measure_anchor_coverage",
]  # fmt: skip

# (box, anchor) pairs whose IoU is computed at once; bounds the peak memory to ~150 MB.
PAIRS_PER_CHUNK = 1 << 21


def _level_window(boxes: torch.Tensor, stride: int, offset: float, cells: torch.Tensor, size):
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
    """
    The (box index, anchor index) pairs of one level for the boxes of `window` (each (g,), a
    chunk of g boxes, the first `first_box`) on a level `width` locations wide, `num_cell`
    anchors per location, the level's first anchor at `first_anchor`; each pair (P,).
    """
    x0, nx, y0, ny = window
    cells = nx * ny
    box = torch.repeat_interleave(torch.arange(len(cells)), cells)
    k = torch.arange(int(cells.sum())) - torch.repeat_interleave(torch.cumsum(cells, 0) - cells, cells)
    nx_rep = nx[box]
    location = (y0[box] + k // nx_rep) * width + x0[box] + k % nx_rep
    anchor = first_anchor + (location[:, None] * num_cell + torch.arange(num_cell)).reshape(-1)
    return (box + first_box).repeat_interleave(num_cell), anchor


@dataclass
class AnchorLayout:
    """All anchors of one image, levels concatenated (M anchors, L levels)."""

    anchors: torch.Tensor  # (M, 4) XYXY
    level: torch.Tensor  # (M,) the level of each anchor
    first: List[int]  # (L,) the index of each level's first anchor
    sizes: List[Tuple[int, int]]  # (L,) each level's (Hi, Wi)


def anchor_layout(grid: AnchorGrid, image_size: Tuple[int, int]) -> AnchorLayout:
    """Phase 1: the anchors of `grid` for an image of `image_size` (height, width), flat."""
    level_anchors = grid.anchors(image_size)
    counts = torch.tensor([len(a) for a in level_anchors])
    return AnchorLayout(
        torch.cat(level_anchors), torch.repeat_interleave(torch.arange(len(level_anchors)), counts),
        (torch.cumsum(counts, 0) - counts).tolist(), grid.feature_sizes(image_size),
    )


def candidate_windows(boxes: torch.Tensor, grid: AnchorGrid, sizes, fg_threshold: float):
    """
    Phase 2: per level, per box (G boxes, (G, 4) XYXY) the window (x0, nx, y0, ny), each (G,)
    int64, of anchor locations whose anchors can overlap the box (`_level_window`), emptied
    (nx = 0) on the levels where even an anchor centred on the box stays below `reach`.

    Pairs of IoU below `reach` change neither a positive label nor the box it goes to (a
    positive anchor's highest IoU is >= fg_threshold or a box's best IoU), so reach is the
    lower of fg_threshold and the lowest best IoU any box can have on the grid.
    """
    num_boxes = len(boxes)
    widths, heights = (boxes[:, 2] - boxes[:, 0]).double(), (boxes[:, 3] - boxes[:, 1]).double()
    dx, dy = nearest_centre_distances(boxes, torch.tensor(sizes).expand(num_boxes, -1, -1), grid.strides, grid.offset)
    best_possible = iou_at_distances(widths, heights, dx, dy, grid.level_cell_anchors).flatten(1).amax(1)
    centred = iou_at_distances(widths, heights, 0 * dx, 0 * dy, grid.level_cell_anchors).amax(2)  # (G, L)
    reach = min(fg_threshold, float(best_possible.min())) * (1 - 1e-3)
    windows = []
    for level, (stride, cells, size) in enumerate(zip(grid.strides, grid.level_cell_anchors, sizes)):
        x0, nx, y0, ny = _level_window(boxes, stride, grid.offset, cells, size)
        windows.append((x0, nx * (centred[:, level] >= reach), y0, ny))
    return windows


def chunk_sizes(windows, level_cell_anchors, pairs_per_chunk: int) -> List[int]:
    """
    Phase 3: the number of consecutive boxes in each chunk, a chunk starting where the pairs
    of the boxes before it reach a multiple of `pairs_per_chunk` (so a chunk holds about that
    many pairs, or one box with more).
    """
    pair_counts = sum(w[1] * w[3] * len(c) for w, c in zip(windows, level_cell_anchors))  # (G,)
    chunk_ids = (torch.cumsum(pair_counts, 0) - pair_counts) // pairs_per_chunk
    return torch.unique_consecutive(chunk_ids, return_counts=True)[1].tolist()


def chunk_pairs(windows, layout: AnchorLayout, level_cell_anchors, start: int, stop: int):
    """Phase 4: the (box index, anchor index) pairs, each (P,), of boxes start..stop-1 on every level."""
    pairs = [
        _level_pairs([t[start:stop] for t in window], size[1], len(cells), first, start)
        for window, size, cells, first in zip(windows, layout.sizes, level_cell_anchors, layout.first)
    ]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


class MatchTotals:
    """
    Phase 5: the maxima over every pair seen so far, per box (best IoU, first anchor of that
    IoU, anchors of IoU >= fg_threshold per level) and per anchor (highest IoU, the first box
    of that IoU: the Matcher's matched_vals and matches), and the anchors that are some box's
    best (the Matcher's low-quality matches).
    """

    def __init__(self, num_boxes: int, layout: AnchorLayout, num_levels: int, fg_threshold: float):
        num_anchors = len(layout.anchors)
        self.layout, self.num_levels, self.fg_threshold = layout, num_levels, fg_threshold
        self.best_iou = torch.zeros(num_boxes)
        self.best_index = torch.full((num_boxes,), num_anchors)  # a box without pairs keeps this sentinel
        self.num_fg = torch.zeros(num_boxes * num_levels, dtype=torch.int64)
        self.anchor_max = torch.zeros(num_anchors)
        self.anchor_match = torch.zeros(num_anchors, dtype=torch.int64)
        self.low_quality = torch.zeros(num_anchors, dtype=torch.bool)

    def add(self, box_idx: torch.Tensor, anchor_idx: torch.Tensor, iou: torch.Tensor, start: int, stop: int):
        """The pairs (each (P,)) of boxes start..stop-1, all pairs of those boxes."""
        num_boxes, num_anchors = len(self.best_iou), len(self.anchor_max)
        local = box_idx - start
        chunk_best = torch.zeros(stop - start).scatter_reduce(0, local, iou, "amax")
        at_best = iou == chunk_best[local]
        self.best_iou[start:stop] = chunk_best
        self.best_index[start:stop] = torch.full((stop - start,), num_anchors).scatter_reduce(
            0, local[at_best], anchor_idx[at_best], "amin"
        )
        self.low_quality[anchor_idx[at_best & (iou > 0)]] = True
        fg = iou >= self.fg_threshold
        self.num_fg += torch.bincount(box_idx[fg] * self.num_levels + self.layout.level[anchor_idx[fg]],
                                      minlength=num_boxes * self.num_levels)  # fmt: skip
        # Among boxes tying for an anchor's highest IoU the first wins, as `max(dim=0)` in the
        # Matcher; a later chunk (later boxes) wins only when higher.
        chunk_max = torch.zeros(num_anchors).scatter_reduce(0, anchor_idx, iou, "amax")
        at_max = iou == chunk_max[anchor_idx]
        chunk_match = torch.full((num_anchors,), num_boxes).scatter_reduce(
            0, anchor_idx[at_max], box_idx[at_max], "amin"
        )
        higher = chunk_max > self.anchor_max
        self.anchor_max = torch.where(higher, chunk_max, self.anchor_max)
        self.anchor_match = torch.where(higher, chunk_match, self.anchor_match)


def matcher_positives(anchor_max: torch.Tensor, low_quality: torch.Tensor, best_iou: torch.Tensor,
                      matcher: Matcher) -> Tuple[torch.Tensor, bool]:
    """
    Phase 6: (M,) bool, the anchors the Matcher labels 1 (foreground) from each anchor's
    highest IoU `anchor_max` (M,), then its low-quality matches `low_quality` (M,); and
    whether it labels every anchor 1, which a box of best IoU 0 (`best_iou` (G,)) makes it do.
    """
    positive = torch.zeros(len(anchor_max), dtype=torch.bool)
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
    return positive, every_anchor_positive


def positives_per_box(positive: torch.Tensor, anchor_match: torch.Tensor, level: torch.Tensor, num_boxes: int,
                      num_levels: int) -> torch.Tensor:
    """Phase 7: (G, L) the positive anchors (`positive` (M,)) matched to each box (`anchor_match` (M,)), per level."""
    counts = torch.bincount(anchor_match[positive] * num_levels + level[positive], minlength=num_boxes * num_levels)
    return counts.view(num_boxes, num_levels)


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
            "best_iou": torch.zeros(0), "best_anchor": torch.zeros(0, 4),
            "best_level": torch.zeros(0, dtype=torch.int64), "num_fg": torch.zeros(0, num_levels, dtype=torch.int64),
            "num_positive": torch.zeros(0, num_levels, dtype=torch.int64), "every_anchor_positive": torch.tensor(False),
        }  # fmt: skip
    layout = anchor_layout(grid, image_size)
    windows = candidate_windows(boxes, grid, layout.sizes, fg_threshold)
    totals = MatchTotals(num_boxes, layout, num_levels, fg_threshold)
    start = 0
    for size in chunk_sizes(windows, grid.level_cell_anchors, PAIRS_PER_CHUNK):
        box_idx, anchor_idx = chunk_pairs(windows, layout, grid.level_cell_anchors, start, start + size)
        iou = matched_pairwise_iou(Boxes(boxes[box_idx]), Boxes(layout.anchors[anchor_idx]))
        totals.add(box_idx, anchor_idx, iou, start, start + size)
        start += size
    positive, every_anchor_positive = matcher_positives(totals.anchor_max, totals.low_quality, totals.best_iou, matcher)
    best_index = totals.best_index.clamp(max=len(layout.anchors) - 1)
    return {
        "best_iou": totals.best_iou,
        "best_anchor": layout.anchors[best_index],
        "best_level": layout.level[best_index],
        "num_fg": totals.num_fg.view(num_boxes, num_levels),
        "num_positive": positives_per_box(positive, totals.anchor_match, layout.level, num_boxes, num_levels),
        "every_anchor_positive": torch.tensor(every_anchor_positive),
    }


def matcher_iou_thresholds(cfg) -> Tuple[float, float]:
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
    fg_threshold, bg_threshold = matcher_iou_thresholds(cfg)
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
