"""
Pictures of dense scenes that stay readable, for the drawings made with Detectron2's
`Visualizer` (the demo, analyze_results' worst images):

- `labels_fit`: per-box labels are drawn only while they cover a small share of the picture;
- `legend_strip`: the legend in a strip of its own, stacked below the picture, never over it;
- `busiest_window`: the window of an image with the most points of interest (e.g. errors),
  to draw enlarged below the whole view.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from detectron2.utils.visualizer import Visualizer

__all__ = ["LABEL_SHARE", "label_area", "labels_fit", "busiest_window", "legend_strip"]

LABEL_SHARE = 0.08  # the most of the picture's area that per-box labels may cover
# Visualizer.draw_text's label of c characters at font size f covers about 1.2 (c + 1) f^2
# pixels of the output at scale 1, its dark box included (measured with Detectron2's fonts).
LABEL_AREA_PER_CHAR = 1.2
LEGEND_CHAR_WIDTH = 0.8  # a legend character's width in pixels per unit of font size, rounded up


def label_area(labels: Sequence[str], font_size) -> float:
    """The area (in pixels of the image at scale 1) that `labels` cover at `font_size` (one or one per label)."""
    chars = np.array([len(label) + 1 for label in labels], dtype=np.float64)
    return float(np.sum(LABEL_AREA_PER_CHAR * chars * np.broadcast_to(np.asarray(font_size, np.float64), chars.shape) ** 2))


def labels_fit(labels: Sequence[str], font_size, height: float, width: float) -> bool:
    """
    The density rule: the labels of the boxes are drawn when their estimated area
    (`label_area`) is at most LABEL_SHARE of the image's area height x width, i.e. while the
    image holds at most LABEL_SHARE * h * w / (1.2 (c + 1) f^2) labelled objects (c characters
    at font size f, both in image pixels). Above that density the boxes are drawn without text
    and the legend carries their counts. With the demo's labels (about 10 characters, at the
    font Detectron2 gives a small box, which grows with the image), that is about 140 objects
    per image of 1000 px or more, whatever its size.
    """
    return label_area(labels, font_size) <= LABEL_SHARE * height * width


def _window_starts(length: int, side: int) -> np.ndarray:
    """Window starts along one axis: every side / 2, the last window ending at the image's edge."""
    last = max(length - side, 0)
    starts = list(range(0, last + 1, max(1, side // 2)))
    if starts[-1] != last:
        starts.append(last)
    return np.array(starts)


def busiest_window(points: np.ndarray, height: int, width: int, side: int) -> Tuple[int, int, int, int]:
    """
    Args:
        points (np.ndarray): (N, 2) x, y of the points of interest, in pixels of the image.
        height, width: the image's size; side: the window's side (cut to the image's shorter side).

    Returns:
        (x0, y0, x1, y1): the side x side window, among those of a grid of stride side / 2
        covering the image, that holds the most points (the first in row order on ties).
    """
    side = int(max(1, min(side, height, width)))
    xs, ys = _window_starts(int(width), side), _window_starts(int(height), side)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    in_x = (points[None, :, 0] >= xs[:, None]) & (points[None, :, 0] < xs[:, None] + side)  # (X, N)
    in_y = (points[None, :, 1] >= ys[:, None]) & (points[None, :, 1] < ys[:, None] + side)  # (Y, N)
    counts = in_y.astype(np.int64) @ in_x.T.astype(np.int64)  # (Y, X)
    yi, xi = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return int(xs[xi]), int(ys[yi]), int(xs[xi]) + side, int(ys[yi]) + side


def legend_strip(items: Sequence[Tuple[str, tuple, Optional[str]]], width: int, font_size: float) -> np.ndarray:
    """
    A legend drawn by Visualizer on a white strip of `width` pixels, to stack below a picture.

    Args:
        items: (text, RGB colour in [0, 1], line style of its box sample or None for no sample),
            laid out left to right, wrapping onto new rows.
        font_size: in pixels of the strip (Visualizer's font size at scale 1).

    Returns:
        np.ndarray: (H, width, 3) uint8 RGB.
    """
    row, pad = 2.4 * font_size, 0.6 * font_size
    places, x, y = [], pad, pad
    for text, _, style in items:
        size = (1.6 * font_size if style else 0.0) + LEGEND_CHAR_WIDTH * font_size * (len(text) + 1)
        if x > pad and x + size > width - pad:
            x, y = pad, y + row
        places.append((x, y))
        x += size + 2 * font_size
    height = int(np.ceil(y + row + pad))
    vis = Visualizer(np.full((height, int(width), 3), 255, np.uint8), metadata=None)
    for (text, colour, style), (x, y) in zip(items, places):
        if style:
            vis.draw_box((x, y + 0.2 * font_size, x + font_size, y + 1.6 * font_size), alpha=1.0, edge_color=colour,
                         line_style=style)  # fmt: skip
            x += 1.6 * font_size
        vis.draw_text(text, (x, y), font_size=font_size, color=colour, horizontal_alignment="left")
    return vis.output.get_image()
