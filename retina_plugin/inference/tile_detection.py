"""
The per-tile detection loop of tiled inference: the tiles of an image read window by window,
`tile_batch` of them at a time through the model, and per tile the boxes it keeps for the merge
across tiles (retina_plugin.inference.tiles: shifted to image coordinates, those cut by a tile
edge that a neighbour sees whole dropped, each flagged when it reaches another tile).
`TiledInference.detect_windows` merges what it returns over a whole image; a block of a raster
keeps it for the merge of the raster (retina_plugin.geo.blocks).
"""
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from .tile_resize import tile_input
from .tiles import keep_tile_detections, reaches_other_tiles, shift_boxes

__all__ = ["detect_tiles"]


@torch.no_grad()
def detect_tiles(
    model: nn.Module,
    read: Callable[[int, int, int, int], Optional[torch.Tensor]],
    tiles: torch.Tensor,
    interiors: torch.Tensor,
    *,
    tile_batch: int,
    resize: Sequence[int] = (),
    keep_all: bool = False,
    indices: Optional[Sequence[int]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> List[tuple]:
    """
    Detect in the tiles `indices` of an image (all of them by default), in that order,
    `tile_batch` tiles in memory at a time.

    Args:
        model: a detector taking Detectron2's model inputs, with a `device`.
        read: read(x0, y0, x1, y1) -> the (C, y1 - y0, x1 - x0) tile in the model's channel
            order (uint8 or float), or None to skip the tile (nothing there to detect).
        tiles: (T, 4) the image's `tile_grid`; interiors: (T, 4) their `tile_interiors`.
        resize: () or (min_size, max_size) of `tile_input`.
        keep_all: keep every box of a tile (TILE_MERGE "deepforest"), not only those
            `keep_tile_detections` keeps.
        indices: rows of `tiles`.
        progress: called with the number of `indices` handled (run or skipped) after each batch.
    Returns:
        per tile run, (tile index, boxes (N, 4) or (N, 5) in image coordinates, scores (N,),
        classes (N,), shared (N,) bool: `reaches_other_tiles`), on the model's device.
    """
    rows = tiles.tolist()
    indices = range(len(rows)) if indices is None else indices
    found, pending, handled = [], [], 0
    for position, tile_index in enumerate(indices):
        x0, y0, x1, y1 = rows[tile_index]
        tile = read(x0, y0, x1, y1)
        if tile is not None:
            pending.append((tile_index, tile))
        last = position == len(indices) - 1
        if len(pending) == tile_batch or (last and pending):
            found += _batch_detections(model, pending, tiles, interiors, resize, keep_all)
            handled, pending = position + 1, []
            if progress is not None:
                progress(handled)
    if progress is not None and handled < len(indices):
        progress(len(indices))
    return found


def _batch_detections(model, batch, tiles, interiors, resize, keep_all) -> List[tuple]:
    """`detect_tiles`'s tuples of one forward of `model` over `batch`, [(tile index, (C, h, w) tile)]."""
    device = model.device
    inputs = [
        {"image": tile_input(tile.to(device).float(), resize), "height": tile.shape[1], "width": tile.shape[2]}
        for _, tile in batch
    ]
    found = []
    for (tile_index, _), output in zip(batch, model(inputs)):
        instances = output["instances"]
        x0, y0 = tiles[tile_index, :2].tolist()
        tile_boxes = shift_boxes(instances.pred_boxes.tensor, x0, y0)
        if keep_all:
            keep = torch.ones(len(tile_boxes), dtype=torch.bool, device=tile_boxes.device)
        else:
            keep = keep_tile_detections(tile_boxes, tile_index, tiles, interiors)
        kept = tile_boxes[keep]
        shared = reaches_other_tiles(kept, tile_index, tiles)
        found.append((tile_index, kept, instances.scores[keep], instances.pred_classes[keep], shared))
    return found
