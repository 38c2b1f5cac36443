"""
A raster's evaluation drawn on the raster: true positives, false positives and missed
ground truth in three colours (rotated boxes turned) on a decimated read of the raster (at most
`max_side` pixels on its long side; rasterio's `out_shape` read, which uses the raster's overviews where it has them,
so the raster is never loaded whole). When that read shrinks the raster more than ZOOM times,
the window with most errors follows below it, read at ZOOM times the raster's resolution. The
legend, with the counts, is a strip of its own at the bottom.
"""
import warnings

import cv2
import numpy as np
import rasterio
import torch
from rasterio.enums import MaskFlags
from rasterio.errors import NodataShadowWarning
from rasterio.windows import Window

from ..inference.dense_drawing import busiest_window
from ..ops import rotated_box_corners
from .evaluate import RasterTruth

__all__ = ["COLOURS", "ZOOM", "valid_pixels", "display_image", "plot_evaluation"]

COLOURS = {"TP": (0, 255, 0), "FP": (255, 0, 0), "missed": (255, 255, 0)}  # RGB
WINDOW_COLOUR = (255, 255, 255)  # the zoomed window's outline on the whole view
ZOOM = 2  # the zoomed window's pixels per raster pixel


def valid_pixels(src, out_shape, window=None) -> np.ndarray:
    """
    (h, w) bool: the pixels of an open raster `src` (read at `out_shape`, from `window`) that
    hold data, as GDAL reads a dataset: its mask or alpha band where it has one (the same for
    every band); otherwise nodata only where every band equals its nodata value.
    """
    with warnings.catch_warnings():
        # A 4-band raster with a nodata value: its masks come from nodata, as meant here.
        warnings.simplefilter("ignore", NodataShadowWarning)
        if any(MaskFlags.per_dataset in flags for flags in src.mask_flag_enums):  # a mask or alpha band
            return src.read_masks(1, out_shape=out_shape, window=window) > 0
        return (src.read_masks(out_shape=(src.count, *out_shape), window=window) > 0).any(axis=0)


def _read(src, out_shape, window=None, stretch=None):
    """
    ((h, w, 3) uint8 RGB of the first three bands, or of band 1 in grey, black where
    `valid_pixels` has no data; the stretch used: per band (lo, hi), None for uint8 rasters).
    16-bit and float bands are stretched between their 2nd and 98th percentile (`stretch` given: those).
    """
    bands = [1, 2, 3] if src.count >= 3 else [1]
    data = src.read(bands, out_shape=(len(bands), *out_shape), window=window)
    valid = valid_pixels(src, out_shape, window)
    if data.dtype != np.uint8:
        if stretch is None:
            stretch = [np.percentile(band[valid].astype(np.float64), [2, 98]) if valid.any() else None for band in data]
        out = np.zeros(data.shape, np.uint8)
        for b, lo_hi in enumerate(stretch):
            if lo_hi is not None:
                lo, hi = lo_hi
                out[b] = np.clip((data[b] - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
        data = out
    data = np.where(valid[None], data, 0).astype(np.uint8)
    image = np.repeat(data, 3, axis=0) if len(bands) == 1 else data
    return np.ascontiguousarray(image.transpose(1, 2, 0)), stretch


def _display_shape(src, max_side: int):
    """((h, w) of the whole view, its pixels per raster pixel): at most max_side on the long side, never enlarged."""
    scale = min(1.0, max_side / max(src.width, src.height))
    return (max(1, round(src.height * scale)), max(1, round(src.width * scale))), scale


def display_image(path: str, max_side: int = 2048) -> tuple:
    """
    Returns:
        ((h, w, 3) uint8 RGB image of the first three bands, or of band 1 in grey, black where
        `valid_pixels` has no data; scale: image pixels per raster pixel).
    """
    with rasterio.open(path) as src:
        shape, scale = _display_shape(src, max_side)
        return _read(src, shape)[0], scale


def _draw_boxes(image: np.ndarray, groups, scale: float, origin=(0, 0)):
    """Each group's raster boxes (XYXY, or XYWHA drawn turned), less `origin`, times `scale`, outlined in its colour on `image`."""
    thickness = max(1, round(max(image.shape[:2]) / 700))
    for name, boxes in groups:
        if boxes.ndim == 2 and boxes.shape[1] == 5:
            if len(boxes):
                corners = rotated_box_corners(torch.as_tensor(boxes, dtype=torch.float64)).numpy()
                outlines = np.round((corners - np.asarray(origin, np.float64)) * scale).astype(np.int32)
                cv2.polylines(image, list(outlines), True, COLOURS[name], thickness)
            continue
        for x0, y0, x1, y1 in np.round((boxes - np.tile(origin, 2)) * scale).astype(int).tolist():
            cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), COLOURS[name], thickness)


def _centres(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) centres of (N, 4) XYXY or (N, 5) XYWHA boxes."""
    if boxes.ndim == 2 and boxes.shape[1] == 5:
        return boxes[:, :2]
    boxes = boxes.reshape(-1, 4)
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _zoomed(src, groups, stretch, width: int):
    """(window x0, y0, x1, y1 in raster pixels, its drawing at ZOOM, at most `width` wide): the window with most errors."""
    errors = np.concatenate([_centres(groups[1][1]), _centres(groups[2][1])])
    x0, y0, x1, y1 = busiest_window(errors, src.height, src.width, width // ZOOM)
    image, _ = _read(src, ((y1 - y0) * ZOOM, (x1 - x0) * ZOOM), Window(x0, y0, x1 - x0, y1 - y0), stretch)
    _draw_boxes(image, groups, ZOOM, origin=(x0, y0))
    return (x0, y0, x1, y1), image


def plot_evaluation(
    truth: RasterTruth, det_tp: np.ndarray, gt_matched: np.ndarray, iou: float, path: str, max_side: int = 2048
) -> str:
    """
    Draw true-positive and false-positive detections and missed ground truth of `truth` at
    `iou` (det_tp (D,), gt_matched (G,) from `match_raster`) on the raster, as PNG at `path`:
    the whole view; below it, where the view shrinks the raster more than ZOOM times and there
    are errors, the window with most of them at ZOOM; then the legend strip.
    """
    groups = (
        ("TP", truth.det_boxes[det_tp]), ("FP", truth.det_boxes[~det_tp]), ("missed", truth.gt_boxes[~gt_matched]),
    )  # fmt: skip
    items = [(f"IoU {iou:g}:", (255, 255, 255))] + [(f"{n} {len(b)}", COLOURS[n]) for n, b in groups]
    with rasterio.open(truth.path) as src:
        shape, scale = _display_shape(src, max_side)
        image, stretch = _read(src, shape)
        _draw_boxes(image, groups, scale)
        parts = [image]
        if scale * ZOOM < 1 and len(groups[1][1]) + len(groups[2][1]):
            (x0, y0, x1, y1), zoomed = _zoomed(src, groups, stretch, shape[1])
            corners = np.round(np.array([x0, y0, x1, y1]) * scale).astype(int).tolist()
            cv2.rectangle(image, tuple(corners[:2]), tuple(corners[2:]), WINDOW_COLOUR, max(1, round(max(shape) / 500)))
            parts.append(np.pad(zoomed, ((0, 0), (0, shape[1] - zoomed.shape[1]), (0, 0))))
            items.append((f"below: x {x0}-{x1}, y {y0}-{y1} at {ZOOM}x (most errors)", WINDOW_COLOUR))
    parts.append(legend_strip(items, shape[1], shape[0]))
    cv2.imwrite(path, np.concatenate(parts, axis=0)[:, :, ::-1])
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
