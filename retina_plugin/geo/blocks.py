"""
A large raster split into blocks of whole tiles, so one scene spreads over many workers, and
the merge of the blocks' detections that gives exactly what one process gives.

A block is a square of `block_windows` x `block_windows` tiles of the same tile grid as
single-process tiled inference (retina_plugin.inference.tiles.tile_grid). A block keeps, per
tile, what `TiledInference.detect_windows` keeps before its merge (both run
`TiledInference.detect_tiles`, retina_plugin.inference.tile_detection): the tile's boxes (its
window resized first with TILE_RESIZE) shifted to raster coordinates, those
`keep_tile_detections` keeps (all of them with TILE_MERGE "deepforest"), each flagged by
`reaches_other_tiles`. The merge of a raster (`merge_blocks`) then runs the one cross-tile merge
(`merge_tiles`: `merge_tile_detections`, or DeepForest's `mosaic_merge`) over the tiles of all
its blocks, as detect_windows runs it over the tiles of the raster: seams between blocks are
merged as seams between tiles, by construction. A model of rotated boxes
(XYWHA, 5 columns) goes the same way: its tiles' boxes are shifted and judged at the edges as in
tiled inference, and the blocks merge by the same rotated NMS (`merge_tile_detections`).
"""
from typing import Callable, List, Optional

import numpy as np
import torch

from ..inference.tiles import merge_tiles, tile_grid, tile_interiors, tile_starts

__all__ = ["DEFAULT_BLOCK_WINDOWS", "raster_blocks", "detect_block", "merge_blocks"]

# Side of a block, in windows: 64 windows of 512 px (~13 megapixels) per task.
DEFAULT_BLOCK_WINDOWS = 8


def raster_blocks(height: int, width: int, tile_size: int, overlap: float, block_windows: int) -> List[List[int]]:
    """
    The blocks of a raster of `height` x `width`: per block, the indices (rows of `tile_grid`,
    row by row) of its tiles. Every tile is in exactly one block.
    """
    rows = len(tile_starts(height, tile_size, overlap))
    cols = len(tile_starts(width, tile_size, overlap))
    blocks = []
    for r0 in range(0, rows, block_windows):
        for c0 in range(0, cols, block_windows):
            blocks.append(
                [r * cols + c for r in range(r0, min(r0 + block_windows, rows)) for c in range(c0, min(c0 + block_windows, cols))]
            )
    return blocks


@torch.no_grad()
def detect_block(
    tiled,
    read: Callable[[int, int, int, int], Optional[torch.Tensor]],
    height: int,
    width: int,
    tile_indices: List[int],
) -> dict:
    """
    Detect in the tiles `tile_indices` of a raster as tiled inference does (`tiled.detect_tiles`).

    Args:
        tiled: a TiledInference (its model, tile size, overlap, batch, edge margin, resize and merge).
        read: read(x0, y0, x1, y1) -> the (C, y1 - y0, x1 - x0) tile in the model's channel order,
            or None to skip it (all nodata), as for `TiledInference.detect_windows`.
    Returns:
        numpy arrays boxes (N, 4) XYXY, or (N, 5) XYWHA for a model of rotated boxes
        (`tiled.box_dim` 5), in raster pixels, scores (N,), classes (N,), shared (N,)
        (`reaches_other_tiles`), tile (N,) (the tile index of each detection): what each tile
        keeps for the merge; and skipped, the number of tiles `read` skipped.
    """
    tiles = tile_grid(height, width, tiled.tile_size, tiled.overlap)
    interiors = tile_interiors(tiles, (height, width), tiled.edge_margin)
    skipped = []

    def counted(*window):
        tile = read(*window)
        if tile is None:
            skipped.append(window)
        return tile

    found = {key: [] for key in ("tile", "boxes", "scores", "classes", "shared")}
    for tile_index, *detections in tiled.detect_tiles(counted, tiles, interiors, tile_indices):
        found["tile"].append(torch.full((len(detections[0]),), tile_index, dtype=torch.int64))
        for key, values in zip(("boxes", "scores", "classes", "shared"), detections):
            found[key].append(values.cpu())
    empty = {"boxes": np.zeros((0, tiled.box_dim), np.float32), "scores": np.zeros(0, np.float32), "classes": np.zeros(0, np.int64),
             "shared": np.zeros(0, bool), "tile": np.zeros(0, np.int64)}  # fmt: skip
    result = {k: torch.cat(v).numpy() if v else empty[k] for k, v in found.items()}
    result["skipped"] = len(skipped)
    return result


def merge_blocks(blocks: List[dict], nms_thresh: float, max_detections: int, class_thresholds=None, merge: str = "edges") -> dict:
    """
    The detections of a raster from those of all its blocks (`detect_block`): the tiles' detections
    in tile order, as detect_windows gathers them, merged as detect_windows merges them (`merge`
    "edges": `merge_tile_detections`; "deepforest": `mosaic_merge`, one NMS over all of them);
    then, with `class_thresholds` (K,), those under their class's threshold dropped, as
    RasterPredictor does. The blocks' boxes are (N, 4) XYXY or, of a rotated model, (N, 5)
    XYWHA, merged by rotated NMS.

    Returns:
        numpy arrays boxes (M, 4) or (M, 5), scores (M,), classes (M,), by decreasing score.
    """
    arrays = {k: np.concatenate([b[k] for b in blocks]) if blocks else np.zeros(0) for k in ("boxes", "scores", "classes", "shared", "tile")}
    order = np.argsort(arrays["tile"], kind="stable")
    box_dim = blocks[0]["boxes"].shape[1] if blocks else 4
    boxes = torch.as_tensor(arrays["boxes"][order], dtype=torch.float32).reshape(-1, box_dim)
    scores = torch.as_tensor(arrays["scores"][order], dtype=torch.float32)
    classes = torch.as_tensor(arrays["classes"][order], dtype=torch.int64)
    shared = torch.as_tensor(arrays["shared"][order], dtype=torch.bool)
    boxes, keep = merge_tiles(boxes, scores, classes, shared, nms_thresh, max_detections, merge)
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if class_thresholds is not None:
        keep = scores >= torch.as_tensor(class_thresholds)[classes]
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    return {"boxes": boxes.numpy(), "scores": scores.numpy(), "classes": classes.numpy()}
