"""
A raster's evaluation drawn on the raster: true positives, false positives and missed
ground truth in three colours on a decimated read of the raster (at most `max_side` pixels on
its long side; rasterio's `out_shape` read, which uses the raster's overviews where it has them,
so the raster is never loaded whole), and a legend in a strip of its own below it.
"""
import warnings
import cv2
import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NodataShadowWarning

from .evaluate import RasterTruth

__all__ = ["COLOURS", "valid_pixels", "display_image", "plot_evaluation"]

COLOURS = {"TP": (0, 255, 0), "FP": (255, 0, 0), "missed": (255, 255, 0)}  # RGB


def valid_pixels(src, out_shape) -> np.ndarray:
    """
    (h, w) bool: the pixels of an open raster `src` (read at `out_shape`) that hold data, as GDAL
    reads a dataset: its mask or alpha band where it has one (the same for every band);
    otherwise nodata only where every band equals its nodata value.
    """
    with warnings.catch_warnings():
        # A 4-band raster with a nodata value: its masks come from nodata, as meant here.
        warnings.simplefilter("ignore", NodataShadowWarning)
        if any(MaskFlags.per_dataset in flags for flags in src.mask_flag_enums):  # a mask or alpha band
            return src.read_masks(1, out_shape=out_shape) > 0
        return (src.read_masks(out_shape=(src.count, *out_shape)) > 0).any(axis=0)


def display_image(path: str, max_side: int = 2048) -> tuple:
    """
    Returns:
        ((h, w, 3) uint8 RGB image of the first three bands, or of band 1 in grey, black where
        `valid_pixels` has no data; scale: image pixels per raster pixel).
    """
    with rasterio.open(path) as src:
        scale = min(1.0, max_side / max(src.width, src.height))
        h, w = max(1, round(src.height * scale)), max(1, round(src.width * scale))
        bands = [1, 2, 3] if src.count >= 3 else [1]
        data = src.read(bands, out_shape=(len(bands), h, w))
        valid = valid_pixels(src, (h, w))
    if data.dtype != np.uint8:
        # Stretch each band between its 2nd and 98th percentile (16-bit and float rasters).
        out = np.zeros(data.shape, np.uint8)
        for b in range(len(bands)):
            values = data[b][valid].astype(np.float64)
            if values.size:
                lo, hi = np.percentile(values, [2, 98])
                out[b] = np.clip((data[b] - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
        data = out
    data = np.where(valid[None], data, 0).astype(np.uint8)
    image = np.repeat(data, 3, axis=0) if len(bands) == 1 else data
    return np.ascontiguousarray(image.transpose(1, 2, 0)), scale


def plot_evaluation(
    truth: RasterTruth, det_tp: np.ndarray, gt_matched: np.ndarray, iou: float, path: str, max_side: int = 2048
) -> str:
    """
    Draw true-positive and false-positive detections and missed ground truth of `truth` at
    `iou` (det_tp (D,), gt_matched (G,) from `match_raster`) on the raster, the legend in a
    strip below it, as PNG at `path`.
    """
    image, scale = display_image(truth.path, max_side)
    thickness = max(1, round(max(image.shape[:2]) / 700))
    groups = (
        ("TP", truth.det_boxes[det_tp]), ("FP", truth.det_boxes[~det_tp]), ("missed", truth.gt_boxes[~gt_matched]),
    )  # fmt: skip
    for name, boxes in groups:
        for x0, y0, x1, y1 in np.round(boxes * scale).astype(int).tolist():
            cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), COLOURS[name], thickness)
    items = [(f"IoU {iou:g}:", (255, 255, 255))] + [(f"{n} {len(b)}", COLOURS[n]) for n, b in groups]
    picture = np.concatenate([image, legend_strip(items, image.shape[1], image.shape[0])], axis=0)
    cv2.imwrite(path, picture[:, :, ::-1])
    return path


def legend_strip(items, width: int, height: int) -> np.ndarray:
    """
    Coloured words (text, RGB) on a black strip `width` pixels wide, wrapped onto as many lines
    as they need, for below an image `height` pixels high (the font follows the image's size).
    Returns (H, width, 3) uint8 RGB.
    """
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = max(0.35, min(width, height) / 1400)
    thick = max(1, round(font_scale * 2))
    sizes = [cv2.getTextSize(text, font, font_scale, thick)[0] for text, _ in items]
    gap = pad = sizes[0][1] // 2 + 2
    line = max(s[1] for s in sizes) + pad
    places, x, y = [], pad, line
    for w, _ in sizes:
        if x > pad and x + w > width - pad:
            x, y = pad, y + line
        places.append((x, y))
        x += w + gap
    strip = np.zeros((y + pad, width, 3), np.uint8)
    for (text, colour), place in zip(items, places):
        cv2.putText(strip, text, place, font, font_scale, colour, thick, cv2.LINE_AA)
    return strip
