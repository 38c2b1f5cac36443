"""
The image an export is traced and checked on (`tools/export_model.py --sample-image`, or one
generated at the config's test size), and the model's input channels in words.
"""
import os
from typing import Optional

import torch
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image

from .export import ExportError

__all__ = ["sample_image", "channel_description"]


def sample_image(cfg, path: Optional[str] = None, seed: int = 0) -> torch.Tensor:
    """
    The model input an export is traced and checked on.

    Args:
        path: an image file, read in cfg.INPUT.FORMAT and resized as `DefaultPredictor`
            resizes; it must have the model's channel count. None generates an image of the
            test size (shortest edge MIN_SIZE_TEST, 512 when that is 0, 4:3 up to
            MAX_SIZE_TEST): a few rectangles of random colour, with noise over the whole image.
        seed: seeds the generated image.
    Returns:
        (C, H, W) float32, C = len(cfg.MODEL.PIXEL_MEAN), pixel values 0..255.
    Raises:
        ExportError: the file is missing, unreadable or has another number of channels.
    """
    channels = len(cfg.MODEL.PIXEL_MEAN)
    if path is not None:
        if not os.path.isfile(path):
            raise ExportError(f"sample image not found: {path}")
        try:
            image = read_image(path, format=cfg.INPUT.FORMAT)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot read sample image {path}: {e}") from e
        resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        image = resize.get_transform(image).apply_image(image)
        if image.shape[2] != channels:
            raise ExportError(
                f"sample image {path} reads as {image.shape[2]} channel(s) in INPUT.FORMAT {cfg.INPUT.FORMAT}, the "
                f"model takes {channels} (len(MODEL.PIXEL_MEAN)); omit --sample-image to trace on a generated image"
            )
        return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))

    height = cfg.INPUT.MIN_SIZE_TEST or 512
    width = min(cfg.INPUT.MAX_SIZE_TEST, height * 4 // 3) if cfg.INPUT.MAX_SIZE_TEST else height * 4 // 3
    g = torch.Generator().manual_seed(seed)
    # Noise everywhere, also on the rectangles: no two locations see identical features, so
    # no two candidates tie in score and NMS keeps the same boxes in every runtime.
    image = torch.rand(channels, height, width, generator=g) * 64 + 96
    for _ in range(4):
        h, w = (torch.randint(s // 8, s // 3 + 1, (1,), generator=g).item() for s in (height, width))
        y, x = (torch.randint(0, s - d, (1,), generator=g).item() for s, d in ((height, h), (width, w)))
        colour = torch.rand(channels, 1, 1, generator=g) * 160
        image[:, y : y + h, x : x + w] = colour + torch.rand(channels, h, w, generator=g) * 32
    return image


def channel_description(cfg) -> str:
    """The model's input channels in words: "BGR", "BGR + 1 further band", "1 band"."""
    channels = len(cfg.MODEL.PIXEL_MEAN)
    if channels == 3:
        return cfg.INPUT.FORMAT
    if channels > 3:
        return f"{cfg.INPUT.FORMAT} + {channels - 3} further band{'s' if channels > 4 else ''}"
    return f"{channels} band{'s' if channels > 1 else ''}"
