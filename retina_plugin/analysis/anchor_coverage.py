"""
Anchor coverage: how well a config's anchors cover a dataset's ground-truth boxes, measured
the way training labels anchors, and an anchor setting that covers them better.

A box is *covered* when its best anchor has IoU >= the foreground threshold, the lowest IoU the
Matcher labels 1 (from MODEL.RETINANET.IOU_THRESHOLDS and IOU_LABELS; 0.5 for [0.4, 0.5] and
[0, -1, 1]): only then does it get foreground anchors by IoU; otherwise it trains on its
low-quality matches alone (MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES) or not at all.

What is modelled, and how:
- boxes are resized as Detectron2's DatasetMapper resizes them (ResizeShortestEdge from
  cfg.INPUT): split "test" uses MIN_SIZE_TEST / MAX_SIZE_TEST; split "train" uses the largest
  of MIN_SIZE_TRAIN (the largest size a box is trained at) with MAX_SIZE_TRAIN. Random flips
  and crops are not modelled. Crowd and empty boxes are dropped, as the mapper drops them.
- anchors are the model's own: the anchor generator cfg builds (MODEL.ANCHOR_GENERATOR), on the
  feature maps MODEL.RETINANET.IN_FEATURES of the backbone cfg builds, for the image alone
  padded to the backbone's size divisibility (in a batch, padding to the largest image adds
  anchors beyond the right and bottom edges, which only matter for boxes touching those edges).
- labels are Detectron2's Matcher's, built as RetinaNetPlugin builds it (IOU_THRESHOLDS,
  IOU_LABELS, ALLOW_LOW_QUALITY_MATCHES). The IoU is computed only for the (box, anchor) pairs
  that can change a foreground label: pairs that cannot overlap, or cannot reach the lower of
  the foreground threshold and the lowest best IoU of the image's boxes, are skipped, so an
  800x1333 image (~120k anchors) costs a few thousand IoUs per box, not 120k.
- box sizes and COCO's size categories (small < 32^2 <= medium < 96^2 <= large) use the box
  area width x height in the resized image, where the anchors are.
"""
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.modeling import build_anchor_generator, build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou

from ..config import anchor_params_per_level, check_retina_plugin_config

__all__ = [
    "SIZE_CATEGORIES",
    "AnchorCoverage",
    "AnchorCoverageError",
    "AnchorCoverageReport",
    "AnchorGrid",
    "AnchorSetting",
    "ResizedBoxes",
    "analyze_anchor_coverage",
    "best_iou_on_grid",
    "format_anchor_coverage_report",
    "load_resized_boxes",
    "match_boxes_to_anchors",
    "measure_anchor_coverage",
    "plot_anchor_coverage",
    "suggest_anchor_setting",
]

# COCO's size categories by area (pixels^2), here of the box in the resized image.
SIZE_CATEGORIES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
IOU_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)
IOU_HISTOGRAM_BINS = 20
# (box, anchor) pairs whose IoU is computed at once; bounds the peak memory to ~150 MB.
PAIRS_PER_CHUNK = 1 << 21
# The search evaluates each candidate on at most this many boxes (evenly spaced).
SEARCH_MAX_BOXES = 20000


class AnchorCoverageError(ValueError):
    """A dataset or config the analysis cannot use; the message names it."""


def _format_number(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e9 else repr(v)


def _format_list(values) -> str:
    return "[" + ", ".join(_format_number(v) for v in values) + "]"


def _round_significant(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def _format_nested(values) -> str:
    return "[" + ", ".join(_format_list(v) for v in values) + "]"


def _shared_or_per_level(values) -> Tuple[Tuple[float, ...], ...]:
    """Per-level tuples as one tuple for every level when they are all equal, else one per level."""
    values = tuple(tuple(float(v) for v in level) for level in values)
    return values[:1] if all(v == values[0] for v in values) else values


def _per_level(values: Tuple[Tuple[float, ...], ...], num_levels: int) -> Tuple[Tuple[float, ...], ...]:
    return values * num_levels if len(values) == 1 else values


@dataclass(frozen=True)
class AnchorSetting:
    """
    The anchors of MODEL.ANCHOR_GENERATOR, as Detectron2's DefaultAnchorGenerator (and
    RetinaAnchorGenerator) read them: `sizes`, per level every anchor size (the square root of
    its area, in pixels; RetinaNet's octave scales applied), and `aspect_ratios` (height /
    width), one tuple for every level or one per level. A level has len(sizes) x len(ratios)
    anchors per location.
    """

    sizes: Tuple[Tuple[float, ...], ...]
    aspect_ratios: Tuple[Tuple[float, ...], ...]

    @classmethod
    def from_config(cls, cfg) -> "AnchorSetting":
        """SIZES and ASPECT_RATIOS of cfg, broadcast over MODEL.RETINANET.IN_FEATURES as Detectron2 does."""
        node, num_levels = cfg.MODEL.ANCHOR_GENERATOR, len(cfg.MODEL.RETINANET.IN_FEATURES)
        sizes = anchor_params_per_level(node.SIZES, num_levels, "MODEL.ANCHOR_GENERATOR.SIZES")
        ratios = anchor_params_per_level(node.ASPECT_RATIOS, num_levels, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
        return cls(tuple(tuple(float(v) for v in level) for level in sizes), _shared_or_per_level(ratios))

    def level_cell_anchors(self) -> List[torch.Tensor]:
        """Per level the (A, 4) anchors of one location, centred on (0, 0), as DefaultAnchorGenerator makes them."""
        generator = DefaultAnchorGenerator(
            sizes=[list(s) for s in self.sizes], aspect_ratios=[list(r) for r in self.aspect_ratios],
            strides=[1] * len(self.sizes),
        )
        return list(generator.cell_anchors)

    def _items(self):
        return (("SIZES", self.sizes), ("ASPECT_RATIOS", self.aspect_ratios))

    def config_opts(self) -> List[str]:
        """KEY VALUE command-line opts."""
        opts = []
        for key, values in self._items():
            opts += [f"MODEL.ANCHOR_GENERATOR.{key}", _format_nested(values)]
        return opts

    def config_yaml(self) -> str:
        """The same settings as YAML lines to paste into a config file."""
        lines = ["MODEL:", "  ANCHOR_GENERATOR:"]
        lines += [f"    {key}: {_format_nested(values)}" for key, values in self._items()]
        return "\n".join(lines)

    def apply_to(self, cfg):
        """A copy of `cfg` with these anchors."""
        cfg = cfg.clone()
        cfg.defrost()
        cfg.merge_from_list(self.config_opts())
        return cfg

    def to_dict(self) -> Dict[str, list]:
        return {key: [[float(v) for v in level] for level in values] for key, values in self._items()}


@dataclass
class ResizedBoxes:
    """A dataset's ground-truth boxes as the model sees them, after the config's resizing."""

    dataset_name: str
    split: str
    short_edge: int
    max_size: int
    file_names: List[str]
    image_sizes: List[Tuple[int, int]]  # per image the resized (height, width)
    boxes: List[torch.Tensor]  # per image (Gi, 4) float32 XYXY in resized pixels

    @property
    def num_boxes(self) -> int:
        return sum(len(b) for b in self.boxes)


def _resize_edges(cfg, split: str) -> Tuple[int, int]:
    if split == "train":
        min_sizes = cfg.INPUT.MIN_SIZE_TRAIN
        min_sizes = [min_sizes] if isinstance(min_sizes, int) else list(min_sizes)
        return int(max(min_sizes)), int(cfg.INPUT.MAX_SIZE_TRAIN)
    if split == "test":
        return int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)
    raise AnchorCoverageError(f"split {split!r} must be 'train' or 'test'")


def load_resized_boxes(cfg, dataset_name: str, split: str = "train", max_images: Optional[int] = None) -> ResizedBoxes:
    """
    The boxes of the registered dataset `dataset_name` (its first `max_images` images), resized
    as the DatasetMapper of `split` resizes them (see the module docstring).
    """
    short_edge, max_size = _resize_edges(cfg, split)
    if dataset_name not in DatasetCatalog.list():
        raise AnchorCoverageError(
            f"dataset {dataset_name!r} is not registered in Detectron2's DatasetCatalog "
            "(register it first, or pass a COCO json file)"
        )
    try:
        records = DatasetCatalog.get(dataset_name)
    except OSError as e:  # registered, but its annotation file is missing or unreadable
        raise AnchorCoverageError(f"dataset {dataset_name!r} cannot be loaded: {e}") from e
    if max_images is not None:
        records = records[: max(int(max_images), 0)]
    if not records:
        raise AnchorCoverageError(f"dataset {dataset_name!r} has no images")
    file_names, image_sizes, boxes = [], [], []
    for record in records:
        if "height" in record and "width" in record:
            height, width = int(record["height"]), int(record["width"])
        else:
            height, width = d2_utils.read_image(record["file_name"]).shape[:2]
        if short_edge > 0:
            new_size = T.ResizeShortestEdge.get_output_shape(height, width, short_edge, max_size)
            transform = T.ResizeTransform(height, width, new_size[0], new_size[1])
        else:  # Detectron2's ResizeShortestEdge does not resize for a size of 0
            new_size, transform = (height, width), T.NoOpTransform()
        image_boxes = [
            d2_utils.transform_instance_annotations(
                {"bbox": obj["bbox"], "bbox_mode": obj["bbox_mode"]}, [transform], new_size
            )["bbox"]
            for obj in record.get("annotations", [])
            if obj.get("iscrowd", 0) == 0
        ]
        image_boxes = Boxes(torch.as_tensor(np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)))
        file_names.append(record.get("file_name", ""))
        image_sizes.append(tuple(new_size))
        boxes.append(image_boxes.tensor[image_boxes.nonempty(threshold=1e-5)])
    resized = ResizedBoxes(dataset_name, split, short_edge, max_size, file_names, image_sizes, boxes)
    if resized.num_boxes == 0:
        raise AnchorCoverageError(f"dataset {dataset_name!r} has no (non-crowd, non-empty) boxes")
    return resized


class AnchorGrid:
    """
    The model's anchors for any image size: the anchor generator `cfg` builds, on the levels
    cfg.MODEL.RETINANET.IN_FEATURES of the backbone `cfg` builds, for an image padded as
    `ImageList.from_tensors` pads it with the backbone's padding.
    """

    def __init__(self, generator, level_names: Sequence[str], strides: Sequence[int], feature_shapes,
                 size_divisibility: int = 0, square_size: int = 0):
        self.generator = generator
        self.level_names = list(level_names)
        self.strides = [int(s) for s in strides]
        self.feature_shapes = list(feature_shapes)
        self.size_divisibility = int(size_divisibility)
        self.square_size = int(square_size)
        self.offset = float(generator.offset)
        self.level_cell_anchors = [c.detach().float().cpu() for c in generator.cell_anchors]

    @classmethod
    def from_config(cls, cfg) -> "AnchorGrid":
        """`cfg`: checked, as `retina_plugin.load_config` returns it."""
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        names = list(cfg.MODEL.RETINANET.IN_FEATURES)
        missing = [f for f in names if f not in shapes]
        if missing:
            raise AnchorCoverageError(
                f"cfg.MODEL.RETINANET.IN_FEATURES = {names}: the backbone {cfg.MODEL.BACKBONE.NAME} "
                f"has no {missing}; it outputs {sorted(shapes)}"
            )
        feature_shapes = [shapes[f] for f in names]
        generator = build_anchor_generator(cfg, feature_shapes)
        if len(set(generator.num_cell_anchors)) != 1:
            raise AnchorCoverageError(
                "the head shares weights across levels, so every level needs the same number of "
                f"anchors, got {generator.num_cell_anchors}"
            )
        square_size = (backbone.padding_constraints or {}).get("square_size", 0)
        return cls(
            generator, names, [s.stride for s in feature_shapes],
            feature_shapes, backbone.size_divisibility, square_size,
        )

    def with_anchors_of(self, cfg) -> "AnchorGrid":
        """The same levels and padding with the anchor generator of `cfg` (checked here)."""
        check_retina_plugin_config(cfg)
        return AnchorGrid(
            build_anchor_generator(cfg, self.feature_shapes), self.level_names, self.strides,
            self.feature_shapes, self.size_divisibility, self.square_size,
        )

    def feature_sizes(self, image_size: Tuple[int, int]) -> List[Tuple[int, int]]:
        """(Hi, Wi) of each level for an image of `image_size` (height, width) alone in a batch."""
        height, width = image_size
        if self.square_size > 0:
            height = width = self.square_size
        if self.size_divisibility > 1:
            d = self.size_divisibility
            height, width = -(-height // d) * d, -(-width // d) * d
        # Every stride-2 conv of the backbone (kernel k, padding (k - 1) // 2) rounds up.
        return [(-(-height // s), -(-width // s)) for s in self.strides]

    def anchors(self, image_size: Tuple[int, int]) -> List[torch.Tensor]:
        """Per level the (Hi*Wi*A, 4) XYXY anchors of an image of `image_size` (height, width)."""
        sizes = self.feature_sizes(image_size)
        features = [torch.empty((1, 0, h, w)) for h, w in sizes]
        level_anchors = [b.tensor for b in self.generator(features)]
        for (h, w), cells, anchors in zip(sizes, self.level_cell_anchors, level_anchors):
            # match_boxes_to_anchors indexes anchors as (y * Wi + x) * A + a.
            if len(anchors) != h * w * len(cells):
                raise AnchorCoverageError(
                    f"anchor generator {type(self.generator).__name__} gives {len(anchors)} anchors on a "
                    f"{h}x{w} map, not {h}x{w}x{len(cells)}"
                )
        return level_anchors


def _nearest_centre_distances(boxes: torch.Tensor, grid_sizes: torch.Tensor, strides: Sequence[int],
                              offset: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, L) distances along x and along y from each box centre to the nearest anchor centre."""
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).double()  # (N, 2) as (x, y)
    distances = []
    for level, stride in enumerate(strides):
        i = torch.floor(centres / stride - offset).long()
        limit = grid_sizes[:, level].flip(1)[:, :, None] - 1  # (N, 2, 1) as (Wi - 1, Hi - 1)
        grid = (offset + torch.stack([i, i + 1], 2).clamp(min=0).minimum(limit)) * stride
        distances.append((grid - centres[:, :, None]).abs().amin(2))
    distances = torch.stack(distances, 1)  # (N, L, 2)
    return distances[..., 0], distances[..., 1]


def _iou_at_distances(widths, heights, dx, dy, level_cell_anchors) -> torch.Tensor:
    """
    widths, heights: (N,) box sizes; dx, dy: (N, L) distances along x and y from the box
    centre to an anchor centre on each level. Returns (N, L, A) the IoU of the box with each
    anchor of `level_cell_anchors` placed there.
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
    generator's real anchors (`match_boxes_to_anchors`).

    Args:
        boxes: (N, 4) XYXY in resized pixels.
        grid_sizes: (N, L, 2) the (Hi, Wi) of each level in each box's image.
        strides: the L strides; offset: the anchor offset (centres at (offset + i) * stride).
        level_cell_anchors: per level the (A, 4) anchors of one location, centred on (0, 0).
    Returns:
        (N,) float64.
    """
    dx, dy = _nearest_centre_distances(boxes, grid_sizes, strides, offset)
    boxes = boxes.double()
    iou = _iou_at_distances(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], dx, dy, level_cell_anchors)
    return iou.flatten(1).amax(1)


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


def _training_matcher(cfg) -> Matcher:
    # Exactly as RetinaNetPlugin.from_config builds its anchor matcher.
    return Matcher(
        cfg.MODEL.RETINANET.IOU_THRESHOLDS,
        cfg.MODEL.RETINANET.IOU_LABELS,
        allow_low_quality_matches=cfg.MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES,
    )


def _quantiles(values: torch.Tensor) -> Dict[str, float]:
    if len(values) == 0:
        return {}
    q = torch.quantile(values.double(), torch.tensor(IOU_QUANTILES, dtype=torch.float64))
    return {f"{p:g}": float(v) for p, v in zip(IOU_QUANTILES, q)}


def _count_stats(counts: torch.Tensor) -> Dict[str, float]:
    if len(counts) == 0:
        return {"mean": None, "median": None, "max": None, "boxes_with_none": 0}
    return {
        "mean": float(counts.double().mean()),
        "median": float(counts.double().median()),
        "max": int(counts.max()),
        "boxes_with_none": int((counts == 0).sum()),
    }


@dataclass
class AnchorCoverage:
    """
    The boxes of a `ResizedBoxes` matched to one anchor setting; the per-box tensors are
    concatenated over images, N boxes in all, L levels.
    """

    anchors: Dict[str, object]  # the config keys that made the anchors
    level_names: List[str]
    strides: List[int]
    fg_threshold: float
    bg_threshold: float
    allow_low_quality_matches: bool
    image_index: torch.Tensor  # (N,) the image of each box
    boxes: torch.Tensor  # (N, 4) XYXY in resized pixels
    best_iou: torch.Tensor  # (N,)
    best_anchor: torch.Tensor  # (N, 4)
    best_level: torch.Tensor  # (N,)
    num_fg: torch.Tensor  # (N, L) anchors with IoU >= fg_threshold with the box
    num_positive: torch.Tensor  # (N, L) anchors training labels foreground for the box
    images_with_every_anchor_positive: int

    @property
    def covered(self) -> torch.Tensor:
        """(N,) bool: the box has an anchor of IoU >= the foreground threshold."""
        return self.best_iou >= self.fg_threshold

    @property
    def areas(self) -> torch.Tensor:
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])

    def _iou_stats(self, mask: torch.Tensor) -> Dict[str, object]:
        best = self.best_iou[mask]
        covered = int((best >= self.fg_threshold).sum())
        counts = torch.histc(best.double(), bins=IOU_HISTOGRAM_BINS, min=0.0, max=1.0)
        return {
            "num_boxes": len(best),
            "num_covered": covered,
            "coverage": covered / len(best) if len(best) else None,
            "mean_best_iou": float(best.double().mean()) if len(best) else None,
            "best_iou_quantiles": _quantiles(best),
            "best_iou_histogram": [int(c) for c in counts],
            "fg_anchors_per_box": _count_stats(self.num_fg[mask].sum(1)),
            "positives_per_box": _count_stats(self.num_positive[mask].sum(1)),
        }

    def summary(self) -> Dict[str, object]:
        """Every number of the analysis, JSON-serialisable."""
        everything = torch.ones(len(self.best_iou), dtype=torch.bool)
        areas = self.areas
        total_fg, total_pos = self.num_fg.sum(1), self.num_positive.sum(1)
        positives_per_level = self.num_positive.sum(0)
        levels = []
        for i, (name, stride) in enumerate(zip(self.level_names, self.strides)):
            levels.append({
                "name": name,
                "stride": stride,
                "positives": int(positives_per_level[i]),
                "share_of_positives": float(positives_per_level[i] / max(int(positives_per_level.sum()), 1)),
                "boxes_with_positives": int((self.num_positive[:, i] > 0).sum()),
                "boxes_with_best_anchor": int((self.best_level == i).sum()),
            })
        return {
            "anchors": self.anchors,
            "all": self._iou_stats(everything),
            "by_size": {name: self._iou_stats((areas >= low) & (areas < high))
                        for name, low, high in SIZE_CATEGORIES},
            "boxes_with_low_quality_positives_only": int(((total_fg == 0) & (total_pos > 0)).sum()),
            "levels": levels,
            "images_with_every_anchor_positive": self.images_with_every_anchor_positive,
        }


def measure_anchor_coverage(resized: ResizedBoxes, grid: AnchorGrid, cfg) -> AnchorCoverage:
    """Match every box of `resized` to the anchors of `grid` with the Matcher of `cfg`."""
    fg_threshold, bg_threshold = _iou_thresholds(cfg)
    matcher = _training_matcher(cfg)
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


def _kmeans_1d(values: np.ndarray, centres: np.ndarray, iterations: int = 50) -> np.ndarray:
    for _ in range(iterations):
        assign = np.abs(values[:, None] - centres[None, :]).argmin(1)
        new = np.array([values[assign == k].mean() if (assign == k).any() else c for k, c in enumerate(centres)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def _aspect_ratio_sets(log_aspect: np.ndarray,
                       current: Tuple[Tuple[float, ...], ...]) -> List[Tuple[Tuple[float, ...], ...]]:
    """
    Candidate aspect ratios (as `AnchorSetting.aspect_ratios`) for boxes of log(height / width)
    `log_aspect`: the current ones and, when every level has n of them, sets of n for every level.
    """
    candidates = [current]
    if len({len(r) for r in current}) != 1:
        return candidates
    n = len(current[0])
    quantile_logs = np.quantile(log_aspect, (np.arange(n) + 0.5) / n)
    median = float(np.median(log_aspect))
    offsets = np.arange(n) - (n - 1) / 2
    sets = [
        quantile_logs,
        _kmeans_1d(log_aspect, quantile_logs),
        median + offsets * math.log(2.0),  # the paper's 1:2, 1:1, 2:1 spread, centred on the median
        median + offsets * math.log(2.0) / 2,
    ]
    for logs in sets:
        ratios = (tuple(_round_significant(math.exp(v), 3) for v in logs),)
        if ratios not in candidates:
            candidates.append(ratios)
    return candidates


def _octave_scale_sets(current: Tuple[Tuple[float, ...], ...]) -> List[Tuple[Tuple[float, ...], ...]]:
    """The current octave scales and, when every level has n, the sets 2^(k * step), k = 0..n-1."""
    candidates = [current]
    if len({len(s) for s in current}) != 1:
        return candidates
    n = len(current[0])
    for step in (1.0 / (2 * n), 1.0 / n, 2.0 / n):
        scales = (tuple(round(2.0 ** (k * step), 4) for k in range(n)),)
        if scales not in candidates:
            candidates.append(scales)
    return candidates


def _scaled_sizes(sizes: Sequence[float], factor: float) -> Tuple[float, ...]:
    return tuple(max(round(s * factor, 1), 0.5) for s in sizes)


@dataclass(frozen=True)
class _Factors:
    """
    An anchor setting as the search varies it (paper section 4): per level a base size, the
    octave scales that multiply it, and the aspect ratios; scales and ratios are one tuple for
    every level or one per level.
    """

    bases: Tuple[float, ...]
    octave_scales: Tuple[Tuple[float, ...], ...]
    aspect_ratios: Tuple[Tuple[float, ...], ...]

    @classmethod
    def of(cls, setting: AnchorSetting) -> "_Factors":
        """Each level's first size as its base, the others as multiples of it."""
        bases = tuple(level[0] for level in setting.sizes)
        scales = [tuple(s / level[0] for s in level) for level in setting.sizes]
        shared = all(len(s) == len(scales[0]) and np.allclose(s, scales[0], rtol=1e-9, atol=0) for s in scales)
        return cls(bases, tuple(scales[:1] if shared else scales), setting.aspect_ratios)

    def setting(self) -> AnchorSetting:
        """The sizes base x scale, rounded to 0.01 px as they are printed."""
        scales = _per_level(self.octave_scales, len(self.bases))
        return AnchorSetting(
            tuple(tuple(round(b * s, 2) for s in level) for b, level in zip(self.bases, scales)), self.aspect_ratios
        )

    def change(self, other: "_Factors") -> float:
        """How far from `other`: summed |log2| of the value ratios."""
        num_levels = len(self.bases)
        pairs = [(self.bases, other.bases)]
        for new, old in ((self.octave_scales, other.octave_scales), (self.aspect_ratios, other.aspect_ratios)):
            if len(new) == len(old) == 1:
                pairs.append((new[0], old[0]))
            else:
                pairs += list(zip(_per_level(new, num_levels), _per_level(old, num_levels)))
        return sum(
            float(np.abs(np.log2(np.asarray(new, dtype=np.float64) / np.asarray(old, dtype=np.float64))).sum())
            for new, old in pairs
        )


def suggest_anchor_setting(boxes: torch.Tensor, grid_sizes: torch.Tensor, strides: Sequence[int], offset: float,
                           current: AnchorSetting, fg_threshold: float) -> Tuple[AnchorSetting, Dict[str, object]]:
    """
    Search anchor settings that keep the number of anchors per location (the head's output
    size) and the levels, and return the one covering most boxes (IoU >= fg_threshold; among
    those covering as many, the one changing the current values least, so a dataset the current
    anchors already cover keeps them).

    The search varies, as the paper describes anchors, a base size per level (each level's first
    size), octave scales and aspect ratios. Candidates: aspect ratios from the current ones, the
    quantiles and the 1-D k-means of the boxes' log(height / width), and 2x / sqrt(2)x spreads
    around its median; octave scales the current ones, 2^(k/n) (the paper's), 2^(k/2n),
    2^(2k/n); all base sizes scaled together by 2^(j/4), j = -16..8. The best is then refined by
    hill climbing (finer size factors, each aspect ratio up or down by 2^(1/8)). Values are
    rounded as they are printed (sizes base x scale to 0.01 px), before they are evaluated, so
    the printed setting reproduces the reported coverage. The search is deterministic: the same
    boxes give the same setting.

    Args:
        boxes: (N, 4) XYXY in resized pixels; grid_sizes: (N, L, 2) as in `best_iou_on_grid`.
        current: the config's setting (`AnchorSetting.from_config`), one size tuple per level of
            the grid.
    Returns:
        (the best setting, as MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS; a dict with the
        predicted coverage before and after, the number of candidates evaluated and the search time).
    """
    start_time = time.perf_counter()
    if len(boxes) > SEARCH_MAX_BOXES:
        keep = torch.linspace(0, len(boxes) - 1, SEARCH_MAX_BOXES).round().long()
        boxes, grid_sizes = boxes[keep], grid_sizes[keep]
    dx, dy = _nearest_centre_distances(boxes, grid_sizes, strides, offset)
    widths, heights = (boxes[:, 2] - boxes[:, 0]).double(), (boxes[:, 3] - boxes[:, 1]).double()
    log_aspect = torch.log(heights / widths).numpy()
    origin = _Factors.of(current)
    scores: Dict[_Factors, Tuple[int, float]] = {}

    def setting_of(factors: _Factors) -> AnchorSetting:
        return current if factors == origin else factors.setting()

    def score(factors: _Factors) -> Tuple[int, float]:
        if factors not in scores:
            cells = setting_of(factors).level_cell_anchors()
            best = _iou_at_distances(widths, heights, dx, dy, cells).flatten(1).amax(1)
            # More boxes covered first; between equals, the smaller change.
            scores[factors] = (int((best >= fg_threshold).sum()), -round(factors.change(origin), 9))
        return scores[factors]

    best_factors, best_score = origin, score(origin)

    def consider(factors):
        nonlocal best_factors, best_score
        if score(factors) > best_score:
            best_factors, best_score = factors, score(factors)

    for ratios in _aspect_ratio_sets(log_aspect, origin.aspect_ratios):
        for scales in _octave_scale_sets(origin.octave_scales):
            for j in range(-16, 9):
                consider(_Factors(_scaled_sizes(origin.bases, 2.0 ** (j / 4)), scales, ratios))

    for _ in range(10):
        previous = best_factors
        base = best_factors
        for j in (-2, -1, 1, 2):
            consider(_Factors(_scaled_sizes(base.bases, 2.0 ** (j / 16)), base.octave_scales, base.aspect_ratios))
        for level, level_ratios in enumerate(base.aspect_ratios):
            for k in range(len(level_ratios)):
                for step in (-1, 1):
                    ratios = [list(r) for r in base.aspect_ratios]
                    ratios[level][k] = _round_significant(ratios[level][k] * 2.0 ** (step / 8), 3)
                    consider(_Factors(base.bases, base.octave_scales, tuple(tuple(r) for r in ratios)))
        if best_factors == previous:
            break

    num_boxes = len(boxes)
    before, after = score(origin), best_score
    return setting_of(best_factors), {
        "searched_boxes": num_boxes,
        "candidates_evaluated": len(scores),
        "search_seconds": time.perf_counter() - start_time,
        "predicted_coverage_before": before[0] / num_boxes,
        "predicted_coverage_after": after[0] / num_boxes,
    }


@dataclass
class AnchorCoverageReport:
    """The analysis of one dataset under one config, and the suggested anchors if any."""

    resized: ResizedBoxes
    current: AnchorCoverage
    suggestion: Optional[AnchorSetting] = None
    suggested: Optional[AnchorCoverage] = None
    search: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        """Every number of the report, JSON-serialisable."""
        resized = self.resized
        train = resized.split == "train"
        out = {
            "dataset": resized.dataset_name,
            "split": resized.split,
            "num_images": len(resized.boxes),
            "num_boxes": resized.num_boxes,
            "resize": {
                "short_edge": resized.short_edge,
                "max_size": resized.max_size,
                "short_edge_from": "max(INPUT.MIN_SIZE_TRAIN)" if train else "INPUT.MIN_SIZE_TEST",
            },
            "box_area_measured_in": "resized image",
            "size_categories": {name: [low, None if math.isinf(high) else high]
                                for name, low, high in SIZE_CATEGORIES},
            "matching": {
                "fg_iou_threshold": self.current.fg_threshold,
                "bg_iou_threshold": self.current.bg_threshold,
                "allow_low_quality_matches": self.current.allow_low_quality_matches,
            },
            "best_iou_quantiles": list(IOU_QUANTILES),
            "best_iou_histogram_bin_edges": [k / IOU_HISTOGRAM_BINS for k in range(IOU_HISTOGRAM_BINS + 1)],
            "current": self.current.summary(),
            "suggested": None,
            "search": self.search,
        }
        if self.suggestion is not None:
            out["suggested"] = dict(
                self.suggested.summary(),
                config_yaml=self.suggestion.config_yaml(),
                config_opts=self.suggestion.config_opts(),
            )
        return out


def analyze_anchor_coverage(cfg, dataset_name: str, split: str = "train", max_images: Optional[int] = None,
                            suggest: bool = True) -> AnchorCoverageReport:
    """
    Match the boxes of the registered dataset `dataset_name` (resized for `split`, "train" or
    "test") to the anchors of `cfg` (checked, as `retina_plugin.load_config` returns it) as
    training does, and, when `suggest`, search a better MODEL.ANCHOR_GENERATOR.SIZES and
    ASPECT_RATIOS and match the boxes to them too (see the module docstring).
    """
    _iou_thresholds(cfg)  # a config without foreground fails before the dataset loads
    resized = load_resized_boxes(cfg, dataset_name, split, max_images)
    grid = AnchorGrid.from_config(cfg)
    current = measure_anchor_coverage(resized, grid, cfg)
    report = AnchorCoverageReport(resized, current)
    if not suggest:
        return report
    setting = AnchorSetting.from_config(cfg)
    if not all(torch.equal(a, b) for a, b in zip(setting.level_cell_anchors(), grid.level_cell_anchors)):
        raise AnchorCoverageError(
            f"anchor generator {cfg.MODEL.ANCHOR_GENERATOR.NAME} does not make the anchors of "
            "MODEL.ANCHOR_GENERATOR.SIZES x ASPECT_RATIOS (as DefaultAnchorGenerator does), so no "
            "setting of those keys can be suggested for it"
        )
    grid_sizes = torch.cat([
        torch.tensor(grid.feature_sizes(size)).expand(len(b), -1, -1)
        for b, size in zip(resized.boxes, resized.image_sizes)
    ])
    setting, report.search = suggest_anchor_setting(
        current.boxes, grid_sizes, grid.strides, grid.offset, setting, current.fg_threshold
    )
    suggested_cfg = setting.apply_to(cfg)
    suggested = measure_anchor_coverage(resized, grid.with_anchors_of(suggested_cfg), suggested_cfg)
    if int(suggested.covered.sum()) > int(current.covered.sum()):
        report.suggestion, report.suggested = setting, suggested
    return report


def _percent(x) -> str:
    if x is None:
        return "-"
    # 99.95% is not 100%: show a second decimal where one would round up to 100.
    return f"{100 * x:.2f}%" if x < 1 and f"{100 * x:.1f}" == "100.0" else f"{100 * x:.1f}%"


def _number(x, digits=2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> List[str]:
    """Text table: first column left-aligned, the others right-aligned."""
    rows = [[str(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row):
        cells = [v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))]
        return (indent + "  ".join(cells)).rstrip()

    return [line(rows[0]), line(["-" * w for w in widths]), *[line(r) for r in rows[1:]]]


def _coverage_rows(summary) -> List[List[str]]:
    rows = []
    for name, stats in [("all", summary["all"]), *summary["by_size"].items()]:
        q = stats["best_iou_quantiles"]
        rows.append([
            name, str(stats["num_boxes"]), _percent(stats["coverage"]), _number(stats["mean_best_iou"]),
            *[_number(q.get(k)) for k in ("0.05", "0.25", "0.5", "0.75")],
            _number(stats["fg_anchors_per_box"]["mean"], 1), _number(stats["positives_per_box"]["mean"], 1),
        ])
    return rows


def _describe_anchors(anchors: Dict[str, object]) -> str:
    sizes = _format_nested([round(s, 2) for s in level] for level in anchors["SIZES"])
    ratios = _format_nested([round(r, 3) for r in level] for level in anchors["ASPECT_RATIOS"])
    return f"{anchors['generator']}: sizes per level {sizes}, aspect ratios (h/w) {ratios}"


def _coverage_section(title: str, coverage: AnchorCoverage, summary) -> List[str]:
    fg = _number(coverage.fg_threshold)
    lines = [title, "  anchors: " + _describe_anchors(summary["anchors"]), ""]
    lines += _table(
        ["boxes", "count", f"IoU>={fg}", "mean IoU", "p5", "p25", "median", "p75", f"IoU>={fg} anchors/box",
         "positives/box"],
        _coverage_rows(summary),
        indent="  ",
    )
    total = summary["all"]
    lines += [
        "",
        f"  boxes with no anchor of IoU >= {fg}: {total['fg_anchors_per_box']['boxes_with_none']}; of these "
        f"{summary['boxes_with_low_quality_positives_only']} still get positives from low-quality matches; "
        f"boxes with no positive anchor at all: {total['positives_per_box']['boxes_with_none']}",
    ]
    if summary["images_with_every_anchor_positive"]:
        lines.append(f"  WARNING: in {summary['images_with_every_anchor_positive']} image(s) a box overlaps no "
                     "anchor, and the Matcher's low-quality matches then label every anchor foreground")
    lines.append("")
    lines += _table(
        ["level", "stride", "positives", "share", "boxes with positives here", "boxes whose best anchor is here"],
        [[level["name"], level["stride"], level["positives"], _percent(level["share_of_positives"]),
          level["boxes_with_positives"], level["boxes_with_best_anchor"]] for level in summary["levels"]],
        indent="  ",
    )
    counts = total["best_iou_histogram"]
    lines += ["", "  best IoU histogram:"]
    pairs = [(k, counts[2 * k] + counts[2 * k + 1]) for k in range(IOU_HISTOGRAM_BINS // 2)]
    peak = max(max(c for _, c in pairs), 1)
    for k, count in pairs:
        bar = "#" * round(40 * count / peak)
        lines.append(f"    [{k / 10:.1f}, {(k + 1) / 10:.1f}{']' if k == 9 else ')'} {count:>7}  {bar}".rstrip())
    return lines


def format_anchor_coverage_report(report: AnchorCoverageReport) -> str:
    """A readable report: tables of coverage and positives, and the lines to paste."""
    data = report.to_dict()
    current = report.current
    resize = data["resize"]
    lines = [
        f"Anchor coverage of {data['dataset']}: {data['num_images']} images, {data['num_boxes']} boxes",
        f"  resized for {data['split']}: shorter side {resize['short_edge']} ({resize['short_edge_from']}), "
        f"longer side <= {resize['max_size']}; box areas and sizes are measured in the resized image "
        "(small < 32^2 <= medium < 96^2 <= large)",
        f"  levels {', '.join(f'{n} (stride {s})' for n, s in zip(current.level_names, current.strides))}",
        f"  matching as in training: IoU >= {current.fg_threshold:g} foreground, < {current.bg_threshold:g} "
        f"background, low-quality matches {'on' if current.allow_low_quality_matches else 'off'}; "
        "'positives' are the anchors training labels foreground for the box",
        "",
    ]
    lines += _coverage_section("Current anchors", current, data["current"])
    lines.append("")
    if report.suggestion is None:
        searched = data["search"].get("candidates_evaluated", 0)
        lines.append(f"Suggested anchors: none of the {searched} settings searched covers more boxes "
                     "than the current one.")
        return "\n".join(lines)
    after = data["suggested"]
    search = data["search"]
    title = (f"Suggested anchors: coverage {_percent(data['current']['all']['coverage'])} -> "
             f"{_percent(after['all']['coverage'])} (searched {search['candidates_evaluated']} settings "
             f"in {search['search_seconds']:.1f} s)")
    lines += _coverage_section(title, report.suggested, after)
    lines += ["", "Paste into the config (YAML):", "", after["config_yaml"], "",
              "or append to the command line:", "",
              " ".join(f'"{v}"' if " " in v else v for v in after["config_opts"])]
    return "\n".join(lines)


def _sample_image(report: AnchorCoverageReport, image: int, max_side: int = 640) -> np.ndarray:
    """RGB picture of one resized image with its uncovered boxes (red, with the best anchor in yellow)."""
    resized, coverage = report.resized, report.current
    height, width = resized.image_sizes[image]
    picture = cv2.imread(resized.file_names[image], cv2.IMREAD_COLOR) if resized.file_names[image] else None
    if picture is None:
        picture = np.full((height, width, 3), 128, np.uint8)
    picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_LINEAR)
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        picture = cv2.resize(picture, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    in_image = (coverage.image_index == image).nonzero().flatten()
    for i in in_image.tolist():
        box = (coverage.boxes[i] * scale).round().int().tolist()
        if coverage.covered[i]:
            cv2.rectangle(picture, tuple(box[:2]), tuple(box[2:]), (0, 200, 0), 1)
            continue
        anchor = (coverage.best_anchor[i] * scale).round().int().tolist()
        cv2.rectangle(picture, tuple(anchor[:2]), tuple(anchor[2:]), (0, 220, 255), 1)
        cv2.rectangle(picture, tuple(box[:2]), tuple(box[2:]), (0, 0, 255), 2)
        # Rounded down: a box of IoU 0.499 is uncovered and must not read 0.50.
        label = f"{math.floor(100 * float(coverage.best_iou[i])) / 100:.2f}"
        cv2.putText(picture, label, (box[0], max(box[1] - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1, cv2.LINE_AA)
    return picture[:, :, ::-1]


def plot_anchor_coverage(report: AnchorCoverageReport, path: str, num_images: int = 4) -> str:
    """
    Write a PNG to `path`: the best-IoU histogram of the current (and suggested) anchors, the
    coverage by box size, and the `num_images` images with the most uncovered boxes, drawn
    with those boxes (red, best IoU above), their best anchor (yellow) and covered boxes (green).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    current, suggested = report.current, report.suggested
    uncovered = torch.bincount(current.image_index[~current.covered], minlength=len(report.resized.boxes))
    order = sorted(range(len(uncovered)), key=lambda i: (-int(uncovered[i]), i))
    samples = [i for i in order[:num_images] if uncovered[i] > 0]

    columns = max(len(samples), 2)
    fig = Figure(figsize=(4.5 * columns, 8.5 if samples else 4.2))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if samples else 1, columns * 2, height_ratios=[1, 1.2] if samples else None)
    ax = fig.add_subplot(grid[0, :columns])
    bins = np.linspace(0.0, 1.0, IOU_HISTOGRAM_BINS + 1)
    ax.hist(current.best_iou.numpy(), bins=bins, alpha=0.6, label="current anchors")
    if suggested is not None:
        ax.hist(suggested.best_iou.numpy(), bins=bins, alpha=0.6, label="suggested anchors")
    ax.axvline(current.fg_threshold, color="k", linestyle="--", linewidth=1, label="foreground threshold")
    ax.axvline(current.bg_threshold, color="gray", linestyle=":", linewidth=1, label="background threshold")
    ax.set_xlabel("best anchor IoU of a ground-truth box")
    ax.set_ylabel("boxes")
    ax.set_title(f"{report.resized.dataset_name}: {report.resized.num_boxes} boxes")
    ax.legend(fontsize=8)

    ax = fig.add_subplot(grid[0, columns:])
    names = ["all"] + [name for name, _, _ in SIZE_CATEGORIES]
    x = np.arange(len(names))

    def coverages(coverage):
        summary = coverage.summary()
        stats = [summary["all"]] + [summary["by_size"][n] for n in names[1:]]
        return [100 * (s["coverage"] or 0.0) for s in stats], [s["num_boxes"] for s in stats]

    values, counts = coverages(current)
    width = 0.4 if suggested is not None else 0.6
    ax.bar(x - (width / 2 if suggested is not None else 0), values, width, label="current anchors")
    if suggested is not None:
        ax.bar(x + width / 2, coverages(suggested)[0], width, label="suggested anchors")
    ax.set_xticks(x, [f"{n}\n({c} boxes)" for n, c in zip(names, counts)], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"% boxes with an anchor of IoU >= {current.fg_threshold:g}")
    ax.set_title("coverage by box size (area in the resized image)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")

    for k, image in enumerate(samples):
        ax = fig.add_subplot(grid[1, 2 * k: 2 * k + 2])
        ax.imshow(_sample_image(report, image))
        ax.set_title(f"image {image}: {int(uncovered[image])} uncovered", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
