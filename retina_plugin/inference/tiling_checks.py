"""
The checks of tiled inference's settings: the arguments of `TiledInference`, DeepForest's merge
refused for a model of rotated boxes, and a test loader that does not resize for tiled
evaluation (the trainer, the tools and the Python API run it before anything is evaluated).
"""
from typing import Sequence

from ..config import VALID_TILE_MERGES, ConfigError

__all__ = ["check_tile_merge", "check_tiled_evaluation", "check_tiling_arguments"]


def check_tile_merge(merge: str, box_dim: int) -> None:
    """DeepForest's merge (`merge` "deepforest") is of horizontal boxes: a ConfigError for `box_dim` 5 (XYWHA)."""
    if box_dim == 5 and merge == "deepforest":
        raise ConfigError(
            "MODEL.RETINA_PLUGIN.TILE_MERGE deepforest merges horizontal boxes as DeepForest does; the model "
            "predicts rotated boxes (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator): use TILE_MERGE edges"
        )


def check_tiling_arguments(
    tile_size: int, overlap: float, tile_batch: int, detections_per_image: int, resize: Sequence[int], merge: str, box_dim: int
) -> None:
    """A ValueError naming the first bad argument of `TiledInference` (see there), or `check_tile_merge`'s ConfigError."""
    if tile_size < 1 or tile_batch < 1 or detections_per_image < 0:
        raise ValueError(
            f"tile_size ({tile_size}) and tile_batch ({tile_batch}) must be >= 1, "
            f"detections_per_image ({detections_per_image}) >= 0"
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    if merge not in VALID_TILE_MERGES or len(resize) not in (0, 2):
        raise ValueError(f"merge {merge!r} must be one of {VALID_TILE_MERGES}, resize {resize!r} () or (min_size, max_size)")
    if box_dim not in (4, 5):
        raise ValueError(f"box_dim {box_dim} must be 4 (XYXY) or 5 (XYWHA)")
    check_tile_merge(merge, box_dim)


def check_tiled_evaluation(cfg) -> None:
    """
    Tiled evaluation (cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0) needs a test loader that does not
    resize (INPUT.MIN_SIZE_TEST 0; Detectron2's DatasetMapper then applies no resize), else the
    tiles would be cut from a resized image (a tile is resized, if at all, by TILE_RESIZE).

    Raises:
        ConfigError: naming INPUT.MIN_SIZE_TEST when tiling is on and it is not 0.
    """
    if cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0 and cfg.INPUT.MIN_SIZE_TEST != 0:
        raise ConfigError(
            f"cfg.INPUT.MIN_SIZE_TEST = {cfg.INPUT.MIN_SIZE_TEST!r}: tiled evaluation "
            f"(MODEL.RETINA_PLUGIN.TILE_SIZE {cfg.MODEL.RETINA_PLUGIN.TILE_SIZE}) feeds tiles at the "
            "image's own resolution; set INPUT.MIN_SIZE_TEST 0 so the test loader does not resize"
        )
