"""
Settings from the data (tools/analyze_anchors.py --propose-settings): from the sizes of a
dataset's boxes in the pixels the model sees, either the tiles (MODEL.RETINA_PLUGIN.TILE_SIZE,
TILE_OVERLAP) and the INPUT sizes of training at native resolution (`propose_tiles`: rasters,
or images tiled by the config), or the INPUT sizes that bring the boxes into the anchors' range
(`propose_input_sizes`: images resized whole); each value with the box statistics it comes
from. The anchors are then searched under those settings (`coverage_report`), and
`SettingsProposal.with_anchors` adds them.
"""
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog

from ...inference.tiles import EDGE_MARGIN, shared_pixels
from .anchor_settings import AnchorSetting, format_nested
from .coverage_report import AnchorCoverageReport
from .resized_boxes import AnchorCoverageError, load_resized_boxes

__all__ = ["BoxSizes", "SettingsProposal", "is_raster", "load_box_sizes", "propose_input_sizes", "propose_tiles"]

# The most of a tile its overlap takes: a stride of at least half a tile, so a pixel is in at
# most 4 tiles.
MAX_TILE_OVERLAP = 0.5
# Input sizes are rounded to this many pixels where the backbone asks for no divisibility.
SIZE_STEP = 32


@dataclass(frozen=True)
class BoxSizes:
    """A dataset's boxes as the model sees them: `widths`, `heights` (N,) in pixels; `image_sizes` (M, 2) (height, width)."""

    dataset_name: str
    widths: np.ndarray
    heights: np.ndarray
    image_sizes: np.ndarray

    @property
    def num_boxes(self) -> int:
        return len(self.widths)

    def longer_side(self, percentile: float) -> float:
        """The `percentile`-th percentile of the boxes' longer side, in pixels."""
        return float(np.percentile(np.maximum(self.widths, self.heights), percentile))

    def sqrt_area(self, percentile: float) -> float:
        """The `percentile`-th percentile of the boxes' sqrt(width x height), the size an anchor's SIZES entry measures."""
        return float(np.percentile(np.sqrt(self.widths * self.heights), percentile))


def is_raster(dataset_name: str) -> bool:
    """Is `dataset_name` the tiles of a raster: its dicts name a `raster_window`."""
    records = DatasetCatalog.get(dataset_name) if dataset_name in DatasetCatalog.list() else []
    return bool(records) and "raster_window" in records[0]


def _whole_raster_boxes(records: List[dict], image_boxes) -> np.ndarray:
    """
    The boxes of a raster dataset's tiles (dicts with a `raster_window`) in the raster's pixels,
    each once: a box that overlapping tiles hold whole is one box, and a box on a tile edge
    inside the raster (the piece of a box the tile cut) is left out, since the tile beside holds
    it whole when the overlap is larger than the boxes.
    """
    rasters = sorted({r["file_name"] for r in records})
    extent = {name: np.max([r["raster_window"][2:] for r in records if r["file_name"] == name], axis=0) for name in rasters}
    rows = []
    for record, boxes in zip(records, image_boxes):
        x0, y0, x1, y1 = record["raster_window"]
        width, height = extent[record["file_name"]]
        b = boxes.numpy().astype(np.float64)
        cut = (((b[:, 0] <= 0) & (x0 > 0)) | ((b[:, 1] <= 0) & (y0 > 0))
               | ((b[:, 2] >= x1 - x0) & (x1 < width)) | ((b[:, 3] >= y1 - y0) & (y1 < height)))
        b = b[~cut] + np.array([x0, y0, x0, y0], np.float64)
        rows.append(np.column_stack([np.full(len(b), rasters.index(record["file_name"])), b]))
    return np.unique(np.round(np.concatenate(rows), 2), axis=0)[:, 1:]


def load_box_sizes(cfg, dataset_name: str, tiled: bool, max_images: Optional[int] = None) -> BoxSizes:
    """
    The boxes of the registered dataset `dataset_name`: at native resolution when `tiled` (tiles
    are never resized), else resized as the config's test loader resizes the images. A raster
    dataset gives each box once (`_whole_raster_boxes`).
    """
    if tiled:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.INPUT.MIN_SIZE_TEST = 0
    resized = load_resized_boxes(cfg, dataset_name, "test", max_images)
    records = DatasetCatalog.get(dataset_name)[: len(resized.boxes)]
    if tiled and all("raster_window" in r for r in records):
        boxes = _whole_raster_boxes(records, resized.boxes)
    else:
        boxes = np.concatenate([b.numpy() for b in resized.boxes]).astype(np.float64)
    return BoxSizes(dataset_name, boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], np.array(resized.image_sizes))


@dataclass
class SettingsProposal:
    """Config keys and values proposed from the data, each with its reason; `statistics` are the box figures they use."""

    statistics: List[str]
    values: Dict[str, object] = field(default_factory=OrderedDict)
    reasons: Dict[str, str] = field(default_factory=OrderedDict)

    def set(self, key: str, value, reason: str):
        self.values[key] = value
        self.reasons[key] = reason

    def config_opts(self) -> List[str]:
        """KEY VALUE command-line opts (values as Detectron2's merge_from_list reads them)."""
        opts = []
        for key, value in self.values.items():
            opts += [key, format_nested(value) if _is_nested(value) else str(value)]
        return opts

    def with_anchors(self, report: AnchorCoverageReport, setting: AnchorSetting) -> "SettingsProposal":
        """Add MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS: the search's suggestion in `report`, else `setting` (the config's)."""
        current = report.current.summary()["all"]["coverage"]
        if report.suggestion is None:
            why = (f"the config's anchors cover {100 * current:.1f}% of the {report.resized.num_boxes} boxes under the "
                   f"settings above (IoU >= {report.current.fg_threshold:g}); no setting searched covers more")
        else:
            setting = report.suggestion
            after = report.suggested.summary()["all"]["coverage"]
            why = (f"cover {100 * after:.1f}% of the {report.resized.num_boxes} boxes under the settings above "
                   f"(IoU >= {report.current.fg_threshold:g}), the config's anchors {100 * current:.1f}%")
        self.set("MODEL.ANCHOR_GENERATOR.SIZES", [list(level) for level in setting.sizes], why)
        self.set("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [list(r) for r in setting.aspect_ratios], why)
        return self

    def to_dict(self) -> Dict[str, object]:
        return {"statistics": list(self.statistics), "values": dict(self.values), "reasons": dict(self.reasons)}

    def format(self) -> str:
        """The proposal as text: the box statistics, then each key, its value and its reason."""
        lines = ["Settings from the data", *[f"  {s}" for s in self.statistics], ""]
        for key, value in self.values.items():
            shown = format_nested(value) if _is_nested(value) else str(value)
            lines += [f"  {key} {shown}", f"      {self.reasons[key]}"]
        return "\n".join(lines)


def _is_nested(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], (list, tuple))


def _round_up(x: float, step: int) -> int:
    return int(math.ceil(x / step - 1e-9)) * step


def _statistics(sizes: BoxSizes, percentile: float, where: str) -> List[str]:
    low = 100 - percentile
    return [
        f"{sizes.num_boxes} boxes of {sizes.dataset_name} ({len(sizes.image_sizes)} image(s)), in {where}",
        f"longer side: p{low:g} {sizes.longer_side(low):.1f} px, median {sizes.longer_side(50):.1f} px, "
        f"p{percentile:g} {sizes.longer_side(percentile):.1f} px, max {sizes.longer_side(100):.1f} px",
        f"sqrt(area): p{low:g} {sizes.sqrt_area(low):.1f} px, median {sizes.sqrt_area(50):.1f} px, "
        f"p{percentile:g} {sizes.sqrt_area(percentile):.1f} px",
    ]


def propose_tiles(sizes: BoxSizes, size_divisibility: int, percentile: float = 99.0, max_cut: float = 0.0,
                  context: float = 4.0, tiles_are_images: bool = True) -> SettingsProposal:
    """
    Tiles for boxes of `sizes` at native resolution. The largest box is the `percentile`-th
    percentile of the longer sides, L. A tile edge cuts off at most `max_cut` of such a box's
    side: a box lies at least `TILE_OVERLAP * TILE_SIZE` deep inside some tile (the tile that
    starts last before it), so the overlap holds (1 - max_cut) L plus the edge margin of tiled
    inference on both sides (`EDGE_MARGIN`: a box nearer a tile edge counts as cut); with
    max_cut 0 every box up to L is seen whole. The tile is at least `context` x L (the context
    around the largest box) and 1 / MAX_TILE_OVERLAP x the overlap, rounded up to the backbone's
    size divisibility. Training sees its images unresized: the tiles, where they are the
    dataset's images (`tiles_are_images`: a raster dataset), else the whole images (a size of 0,
    which Detectron2's ResizeShortestEdge does not resize). Tiled evaluation needs
    INPUT.MIN_SIZE_TEST 0.
    """
    if not 50 < percentile <= 100 or not 0 <= max_cut < 1 or context < 1:
        raise AnchorCoverageError(
            f"--percentile {percentile:g} must be in (50, 100], --max-cut {max_cut:g} in [0, 1), --context {context:g} >= 1"
        )
    largest = sizes.longer_side(percentile)
    need = int(math.ceil((1 - max_cut) * largest + 2 * EDGE_MARGIN))
    step = max(int(size_divisibility), SIZE_STEP)
    tile = _round_up(max(context * largest, need / MAX_TILE_OVERLAP), step)
    # The least overlap (to 0.01) whose shared pixels (tiles.shared_pixels, as tile_starts lays tiles out) hold `need`.
    overlap = math.floor(100 * need / tile) / 100
    while shared_pixels(tile, overlap) < need:
        overlap = round(overlap + 0.01, 2)
    proposal = SettingsProposal(_statistics(sizes, percentile, "native pixels (tiles are not resized)"))
    proposal.set(
        "MODEL.RETINA_PLUGIN.TILE_SIZE", tile,
        f"the smallest multiple of {step} (the backbone's size divisibility, at least {SIZE_STEP}) >= {context:g} x "
        f"{largest:.1f} px (context around the largest box, p{percentile:g} of the longer side) and >= "
        f"{need} / {MAX_TILE_OVERLAP:g} (the overlap at most {MAX_TILE_OVERLAP:g} of a tile)",
    )
    outcome = (f"every box up to p{percentile:g} is seen whole by a tile" if max_cut == 0 else
               f"no box up to p{percentile:g} loses more than {100 * max_cut:g}% of its side in every tile")
    proposal.set(
        "MODEL.RETINA_PLUGIN.TILE_OVERLAP", overlap,
        f"neighbours share {shared_pixels(tile, overlap)} px >= {need} px = (1 - {max_cut:g}) x {largest:.1f} px + 2 x "
        f"{EDGE_MARGIN:g} px (tiled inference's edge margin): {outcome}",
    )
    if tiles_are_images:
        at_native = f"tiles of {tile} px trained unresized, at the resolution tiled inference sees them"
        proposal.set("INPUT.MIN_SIZE_TRAIN", [tile], at_native)
        proposal.set("INPUT.MAX_SIZE_TRAIN", tile, at_native)
    else:
        proposal.set("INPUT.MIN_SIZE_TRAIN", [0], "the images trained unresized (ResizeShortestEdge does not resize to "
                     "0), at the resolution tiled inference sees them")
    proposal.set("INPUT.MIN_SIZE_TEST", 0, "tiled evaluation feeds the tiles unresized (check_tiled_evaluation)")
    return proposal


def _input_scale(sizes: BoxSizes, setting: AnchorSetting, fg_threshold: float, percentile: float):
    """The factor on the input size that brings the small and the large boxes within the anchors' reach, and why."""
    smallest, largest = min(min(s) for s in setting.sizes), max(max(s) for s in setting.sizes)
    # A box of the anchor's shape and centre has IoU (box / anchor)^2 when smaller, (anchor / box)^2 when larger.
    reach = math.sqrt(fg_threshold)
    small, large = sizes.sqrt_area(100 - percentile), sizes.sqrt_area(percentile)
    lowest, highest = smallest * reach / small, largest / reach / large
    what = (f"p{100 - percentile:g} sqrt(area) {small:.1f} px and p{percentile:g} {large:.1f} px; the anchors reach "
            f"{smallest:g} x sqrt({fg_threshold:g}) = {smallest * reach:.1f} px to {largest:g} / sqrt({fg_threshold:g}) "
            f"= {largest / reach:.1f} px")
    if lowest > 1:
        return lowest, f"{what}: scaled by {lowest:.3f} the small boxes reach the smallest anchor"
    if highest < 1:
        return highest, f"{what}: scaled by {highest:.3f} the large boxes reach the largest anchor"
    return 1.0, f"{what}: at the current size the boxes are within reach, the size stays"


def propose_input_sizes(sizes: BoxSizes, cfg, fg_threshold: float, percentile: float = 99.0) -> SettingsProposal:
    """
    INPUT sizes for images resized whole (no tiling): every INPUT size of `cfg` scaled by one
    factor so that the small boxes (the `100 - percentile`-th percentile of sqrt(area), as
    `sizes` gives them at the config's test size) reach the smallest anchor of `cfg` with IoU
    >= `fg_threshold`, else the large boxes (the `percentile`-th) the largest; the small boxes
    first, and no INPUT key where both are within reach. Sizes are rounded to SIZE_STEP pixels,
    up when the input grows, down when it shrinks.
    """
    if not 50 < percentile <= 100:
        raise AnchorCoverageError(f"--percentile {percentile:g} must be in (50, 100]")
    scale, why = _input_scale(sizes, AnchorSetting.from_config(cfg), fg_threshold, percentile)
    proposal = SettingsProposal(_statistics(sizes, percentile, "the images as the test loader resizes them"))
    if scale == 1.0:
        proposal.statistics.append(why)
        return proposal
    node = cfg.INPUT
    base = node.MIN_SIZE_TEST or int(np.median(sizes.image_sizes.min(1)))

    def scaled(v, factor=scale):
        # Rounded away from the current size, so the boxes that set the scale stay within reach.
        rounded = _round_up(v * factor, SIZE_STEP) if factor >= 1 else int(v * factor // SIZE_STEP) * SIZE_STEP
        return max(rounded, SIZE_STEP)

    # Each maximum follows its shorter side as rounded, so a long image is capped as before.
    train_sizes = [node.MIN_SIZE_TRAIN] if isinstance(node.MIN_SIZE_TRAIN, int) else list(node.MIN_SIZE_TRAIN)
    new_train, new_test = [scaled(v) for v in train_sizes], scaled(base)
    proposal.set("INPUT.MIN_SIZE_TRAIN", new_train, why)
    proposal.set("INPUT.MAX_SIZE_TRAIN", scaled(node.MAX_SIZE_TRAIN, max(new_train) / max(train_sizes)),
                 "scaled as the largest INPUT.MIN_SIZE_TRAIN")
    proposal.set("INPUT.MIN_SIZE_TEST", new_test,
                 f"{base} px x {scale:.3f}" + ("" if node.MIN_SIZE_TEST else " (the median shorter side; MIN_SIZE_TEST was 0)"))
    proposal.set("INPUT.MAX_SIZE_TEST", scaled(node.MAX_SIZE_TEST, new_test / base), "scaled as INPUT.MIN_SIZE_TEST")
    return proposal
