"""
A raster's evaluation drawn on the raster: true positives, false positives and missed
ground truth in three colours, with a legend line, on a decimated read of the raster (at most
`max_side` pixels on its long side; rasterio's `out_shape` read, which uses the raster's
overviews where it has them, so the raster is never loaded whole).
"""
import warnings
from typing import Optional

import cv2
import numpy as np
import rasterio
from rasterio.errors import NodataShadowWarning

from .evaluate import RasterTruth

__all__ = ["COLOURS", "display_image", "plot_evaluation"]

COLOURS = {"TP": (0, 255, 0), "FP": (255, 0, 0), "missed": (255, 255, 0)}  # RGB


def display_image(path: str, max_side: int = 2048) -> tuple:
    """
    Returns:
        ((h, w, 3) uint8 RGB image of the first three bands, or of band 1 in grey, nodata black;
        scale: image pixels per raster pixel).
    """
    with rasterio.open(path) as src:
        scale = min(1.0, max_side / max(src.width, src.height))
        h, w = max(1, round(src.height * scale)), max(1, round(src.width * scale))
        bands = [1, 2, 3] if src.count >= 3 else [1]
        data = src.read(bands, out_shape=(len(bands), h, w))
        with warnings.catch_warnings():
            # A 4-band raster with a nodata value: its masks come from nodata, as meant here.
            warnings.simplefilter("ignore", NodataShadowWarning)
            valid = src.read_masks(bands, out_shape=(len(bands), h, w)) > 0
    if data.dtype != np.uint8:
        # Stretch each band between its 2nd and 98th percentile (16-bit and float rasters).
        out = np.zeros(data.shape, np.uint8)
        for b in range(len(bands)):
            values = data[b][valid[b]].astype(np.float64)
            if values.size:
                lo, hi = np.percentile(values, [2, 98])
                out[b] = np.clip((data[b] - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
        data = out
    data = np.where(valid, data, 0).astype(np.uint8)
    image = np.repeat(data, 3, axis=0) if len(bands) == 1 else data
    return np.ascontiguousarray(image.transpose(1, 2, 0)), scale


def plot_evaluation(
    truth: RasterTruth, det_tp: np.ndarray, gt_matched: np.ndarray, iou: float, path: str, max_side: int = 2048
) -> str:
    """
    Draw true-positive and false-positive detections and missed ground truth of `truth` at
    `iou` (det_tp (D,), gt_matched (G,) from `match_raster`) on the raster, as PNG at `path`.
    """
    image, scale = display_image(truth.path, max_side)
    thickness = max(1, round(max(image.shape[:2]) / 700))
    groups = (
        ("TP", truth.det_boxes[det_tp]), ("FP", truth.det_boxes[~det_tp]), ("missed", truth.gt_boxes[~gt_matched]),
    )  # fmt: skip
    for name, boxes in groups:
        for x0, y0, x1, y1 in np.round(boxes * scale).astype(int).tolist():
            cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), COLOURS[name], thickness)
    _legend(image, [(f"IoU {iou:g}:", (255, 255, 255))] + [(f"{n} {len(b)}", COLOURS[n]) for n, b in groups])
    cv2.imwrite(path, image[:, :, ::-1])
    return path


def _legend(image: np.ndarray, items, font_scale: Optional[float] = None):
    """One line of coloured words on a black strip at the image's top left."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = font_scale or max(0.35, min(image.shape[:2]) / 1400)
    thick = max(1, round(font_scale * 2))
    sizes = [cv2.getTextSize(text, font, font_scale, thick)[0] for text, _ in items]
    gap, pad = sizes[0][1], sizes[0][1] // 2 + 2
    height = max(s[1] for s in sizes) + 2 * pad
    width = sum(s[0] for s in sizes) + gap * (len(items) - 1) + 2 * pad
    cv2.rectangle(image, (0, 0), (min(width, image.shape[1] - 1), min(height, image.shape[0] - 1)), (0, 0, 0), -1)
    x = pad
    for (text, colour), size in zip(items, sizes):
        cv2.putText(image, text, (x, height - pad), font, font_scale, colour, thick, cv2.LINE_AA)
        x += size[0] + gap
