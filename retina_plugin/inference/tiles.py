"""
The tiles of a large image and the merge of their detections, as pure functions on boxes:
the grid of overlapping tiles (`tile_starts`, `tile_grid`), what a tile sees whole
(`tile_interiors`, `keep_tile_detections`, `reaches_other_tiles`: a piece of an object cut by a
tile edge is dropped where a neighbouring tile sees it whole), and the class-wise NMS over all
tiles (`merge_tile_detections`; `merge_tiles` picks it or DeepForest's `mosaic_merge` by
TILE_MERGE). `retina_plugin.inference.tiling.TiledInference` runs a model over the tiles with
them (its per-tile loop: retina_plugin.inference.tile_detection).

Boxes are horizontal (N, 4) XYXY or rotated (N, 5) XYWHA (cx, cy, w, h, angle in degrees
counter-clockwise, Detectron2's `RotatedBoxes`). The tile-edge rules read a rotated box's
enclosing axis-aligned box (`enclosing_boxes`), which is exact for them: a rotated box lies in an
axis-aligned region exactly when its four corners do, i.e. when its enclosing box does; the
enclosing box has the rotated box's centre (which picks the owning tile); and a box whose
enclosing box reaches no other tile does not reach it either. Only the NMS needs the rotated
boxes themselves (`retina_plugin.ops.batched_nms_rotated`, exact rotated IoU): diagonal objects
side by side (parked cars, moored ships) have enclosing boxes that overlap although they do not. `mosaic_merge` is DeepForest's merge instead (`predict.mosiac`: one NMS
over all windows' boxes, cut to whole pixels), for models converted from DeepForest
(docs/deepforest.md).
"""
import math
from typing import List, Tuple

import torch
from detectron2.layers import batched_nms
from detectron2.structures import BoxMode
from torchvision.ops import nms

from ..ops import batched_nms_rotated

__all__ = [
    "EDGE_MARGIN",
    "enclosing_boxes",
    "shift_boxes",
    "tile_starts",
    "tile_grid",
    "tile_interiors",
    "keep_tile_detections",
    "merge_tile_detections",
    "reaches_other_tiles",
    "shared_pixels",
    "mosaic_merge",
    "merge_tiles",
]

# A box within this many pixels of a tile edge that is not the image border counts as cut by
# that edge: a truncated object's regressed box stops near the edge, not exactly on it.
EDGE_MARGIN = 4.0


def enclosing_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """
    Args:
        boxes: (N, 4) XYXY, returned as they are, or (N, 5) rotated XYWHA.
    Returns:
        (N, 4) XYXY: the smallest axis-aligned box holding each box (Detectron2's BoxMode.convert).
    """
    if boxes.shape[-1] == 4:
        return boxes
    return BoxMode.convert(boxes, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)


def shift_boxes(boxes: torch.Tensor, x0: float, y0: float) -> torch.Tensor:
    """(N, 4) XYXY or (N, 5) XYWHA boxes of a tile starting at (x0, y0) -> the same boxes in image coordinates."""
    offset = [x0, y0, x0, y0] if boxes.shape[-1] == 4 else [x0, y0, 0.0, 0.0, 0.0]
    return boxes + boxes.new_tensor(offset)


def shared_pixels(tile_size: int, overlap: float) -> int:
    """The pixels neighbouring tiles share at least: floor(tile_size * overlap)."""
    return math.floor(tile_size * overlap)


def tile_starts(length: int, tile_size: int, overlap: float) -> List[int]:
    """
    Start offsets of the tiles along one axis of `length` pixels: a stride of
    `tile_size - floor(tile_size * overlap)`, and a last tile aligned to the far edge, so
    every pixel is covered and neighbours share at least `floor(tile_size * overlap)` pixels.
    An axis no longer than a tile has one tile, starting at 0 (it is then `length` long).
    This is the layout of DeepForest's windows (`slidingwindow.generateForSize`).
    """
    if length <= tile_size:
        return [0]
    stride = tile_size - shared_pixels(tile_size, overlap)
    if stride < 1:
        raise ValueError(f"overlap {overlap} leaves no stride for tiles of {tile_size} pixels")
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return starts


def tile_grid(height: int, width: int, tile_size: int, overlap: float) -> torch.Tensor:
    """
    The tiles covering an image of `height` x `width`, row by row.

    Returns:
        (T, 4) int64 tensor of tiles (x0, y0, x1, y1) in pixels, x1 and y1 exclusive; each is
        tile_size x tile_size, or the image's side where the image is smaller than a tile.
    """
    ys = tile_starts(height, tile_size, overlap)
    xs = tile_starts(width, tile_size, overlap)
    tile_h, tile_w = min(tile_size, height), min(tile_size, width)
    return torch.tensor([(x, y, x + tile_w, y + tile_h) for y in ys for x in xs], dtype=torch.int64)


def tile_interiors(tiles: torch.Tensor, image_size: Tuple[int, int], margin: float) -> torch.Tensor:
    """
    The region of each tile in which a box is seen whole: the tile shrunk by `margin` on
    every edge that lies inside the image. Edges on the image border are not shrunk, since
    what is cut there is cut in every tile.

    Args:
        tiles: (T, 4) tiles (x0, y0, x1, y1) of `tile_grid`.
        image_size: (height, width) of the image.
    Returns:
        (T, 4) float regions (x0, y0, x1, y1).
    """
    height, width = image_size
    tiles = tiles.float()
    x0, y0, x1, y1 = tiles.unbind(1)
    return torch.stack(
        [
            torch.where(x0 > 0, x0 + margin, x0),
            torch.where(y0 > 0, y0 + margin, y0),
            torch.where(x1 < width, x1 - margin, x1),
            torch.where(y1 < height, y1 - margin, y1),
        ],
        dim=1,
    )


def keep_tile_detections(
    boxes: torch.Tensor, tile_index: int, tiles: torch.Tensor, interiors: torch.Tensor
) -> torch.Tensor:
    """
    Which boxes detected in tile `tile_index` to keep, so that each object is reported by one
    tile. The tiles that see a box whole are those whose interior contains it; of them, the
    one whose centre is nearest the box's centre reports it. So a box reaching into the margin
    of an interior edge of its tile (a piece of an object cut by that edge) is dropped when
    another tile sees it whole; and an object seen whole by two tiles is kept from one, even
    where a few pixels of jitter between their two boxes of a small object leave an IoU below
    the NMS threshold. Boxes that no tile sees whole (objects larger than the overlap) are
    kept from every tile, for the NMS.

    Args:
        boxes: (N, 4) boxes (x0, y0, x1, y1) or (N, 5) rotated boxes (their enclosing boxes
            decide) of one tile, in image coordinates.
        tile_index: the tile they were detected in, a row of `tiles`.
        tiles: (T, 4) tiles of `tile_grid`.
        interiors: (T, 4) their regions of `tile_interiors`.
    Returns:
        (N,) bool mask of the boxes to keep.
    """
    boxes = enclosing_boxes(boxes)
    regions = interiors[None].to(boxes)
    inside = (boxes[:, None, :2] >= regions[..., :2]).all(2) & (boxes[:, None, 2:] <= regions[..., 2:]).all(2)
    tiles = tiles.to(boxes)
    # On a grid of tiles, the nearest centre splits each overlap at its middle.
    offsets = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2 - (tiles[None, :, :2] + tiles[None, :, 2:]) / 2
    owner = offsets.square().sum(2).masked_fill(~inside, math.inf).argmin(1)
    return (owner == tile_index) | ~inside.any(1)


def reaches_other_tiles(boxes: torch.Tensor, tile_index: int, tiles: torch.Tensor) -> torch.Tensor:
    """
    Args:
        boxes: (N, 4) boxes of tile `tile_index`, in image coordinates, inside that tile; or
            (N, 5) rotated boxes, whose enclosing boxes are tested.
        tiles: (T, 4) tiles of `tile_grid`.
    Returns:
        (N,) bool: whether a box overlaps (with positive area) a tile other than its own.
    """
    boxes = enclosing_boxes(boxes)
    tiles = tiles.to(boxes)
    width = torch.minimum(boxes[:, None, 2], tiles[None, :, 2]) - torch.maximum(boxes[:, None, 0], tiles[None, :, 0])
    height = torch.minimum(boxes[:, None, 3], tiles[None, :, 3]) - torch.maximum(boxes[:, None, 1], tiles[None, :, 1])
    overlaps = (width > 0) & (height > 0)
    overlaps[:, tile_index] = False
    return overlaps.any(1)


def merge_tile_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    shared: torch.Tensor,
    nms_thresh: float,
    max_detections: int,
) -> torch.Tensor:
    """
    Merge the detections of all tiles, in image coordinates: class-wise NMS where tiles
    overlap (rotated NMS for rotated boxes), then the `max_detections` best.

    Each tile's detections have been through class-wise NMS at `nms_thresh` already, and a box
    lies inside its tile, so two boxes can only suppress each other when they come from
    different tiles and both reach into where those tiles overlap. The NMS therefore runs on
    the `shared` boxes only, which gives the result of an NMS over all boxes without its
    quadratic cost on huge images.

    Args:
        boxes: (N, 4) XYXY or (N, 5) XYWHA; scores: (N,); classes: (N,) int64;
        shared: (N,) bool, `reaches_other_tiles` of each box.
        max_detections: the most kept, by score; 0 keeps all.
    Returns:
        indices of the kept detections, by decreasing score.
    """
    candidates = shared.nonzero().squeeze(1)
    nms_of_boxes = batched_nms if boxes.shape[-1] == 4 else batched_nms_rotated
    kept = candidates[nms_of_boxes(boxes[candidates], scores[candidates], classes[candidates], nms_thresh)]
    kept = torch.cat([kept, (~shared).nonzero().squeeze(1)])
    order = scores[kept].argsort(descending=True, stable=True)
    return kept[order][: max_detections or None]


def mosaic_merge(boxes: torch.Tensor, scores: torch.Tensor, nms_thresh: float, max_detections: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    DeepForest's merge of its windows (`deepforest.predict.mosiac`): every box's corners cut
    to whole pixels (DeepForest casts them to int, which truncates towards 0), then one NMS
    over the boxes of all windows and all classes at `nms_thresh`, then the `max_detections`
    best (0 keeps all).

    Args:
        boxes: (N, 4) boxes (x0, y0, x1, y1) in image coordinates, >= 0; scores: (N,).
    Returns:
        the boxes cut to whole pixels (N, 4) and the indices of the kept ones, by decreasing score.
    """
    whole = boxes.trunc()
    keep = nms(whole, scores, nms_thresh)
    return whole, keep[: max_detections or None]


def merge_tiles(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    shared: torch.Tensor,
    nms_thresh: float,
    max_detections: int,
    merge: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The merge across tiles that MODEL.RETINA_PLUGIN.TILE_MERGE names: "edges"
    (`merge_tile_detections`, the boxes as they are) or "deepforest" (`mosaic_merge`, the boxes
    cut to whole pixels). Arguments as for `merge_tile_detections`.

    Returns:
        the boxes (N, 4) or (N, 5) and the indices of the kept ones, by decreasing score.
    """
    if merge == "deepforest":
        return mosaic_merge(boxes, scores, nms_thresh, max_detections)
    return boxes, merge_tile_detections(boxes, scores, classes, shared, nms_thresh, max_detections)
