"""
A tile as the network gets it in tiled inference: at native resolution, or resized first as
torchvision's `GeneralizedRCNNTransform` resizes an image (MODEL.RETINA_PLUGIN.TILE_RESIZE
[min_size, max_size]: DeepForest's 400 px windows seen at 800 px, docs/deepforest.md).
"""
from typing import Sequence

import torch
from torch.nn import functional as F

__all__ = ["resize_tile", "tile_input"]


def resize_tile(tile: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """
    A tile resized as torchvision's `GeneralizedRCNNTransform(min_size, max_size)` resizes an
    image (its `_resize_image_and_masks`): by min(min_size / shorter side, max_size / longer
    side), each side floor(side * scale), bilinear without corner alignment on float values.
    Detectron2's `ResizeShortestEdge` rounds the sides instead and resizes uint8 images with
    PIL, so a torchvision-trained model would see other pixel values.

    Args:
        tile: (C, h, w) float.
    Returns:
        (C, h', w') float.
    """
    height, width = tile.shape[-2:]
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return F.interpolate(tile[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False)[0]


def tile_input(tile: torch.Tensor, resize: Sequence[int]) -> torch.Tensor:
    """A (C, h, w) float tile as the network gets it: as it is for `resize` (), else `resize_tile(tile, *resize)`."""
    return resize_tile(tile, *resize) if resize else tile
