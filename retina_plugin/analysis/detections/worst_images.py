"""
The images with the most errors at the per-class thresholds, drawn with Detectron2's
Visualizer: true positives, false positives (labelled with their TIDE type) and missed
ground-truth boxes in three colours (rotated boxes drawn turned). Dense images stay readable (`inference.dense_drawing`):
labels only where they fit, then the window with most errors enlarged below the whole view,
and a legend with the counts in a strip of its own below everything.
"""
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import Visualizer

from ...errors import InputFileError
from ...inference.dense_drawing import busiest_window, labels_fit, legend_strip
from .detection_data import image_slices
from .tide import ERROR_TYPES

__all__ = ["COLORS", "image_errors", "worst_images", "draw_image_errors", "write_worst_images"]

COLORS = {"true positive": (0.1, 0.8, 0.1), "false positive": (0.95, 0.15, 0.1), "missed": (0.15, 0.55, 1.0)}
WINDOW_COLOR = (1.0, 0.85, 0.0)  # the outline of the zoomed window on the whole view
MIN_SIDE = 512  # small images are drawn enlarged to at least this size
FONT_SIZE = 0.024 * MIN_SIDE  # labels and legend, in pixels of the picture
ZOOMS = range(2, 9)  # the zoomed window's side is the image's long side / one of these, the largest that fits


@dataclass
class Mark:
    """
    One box to draw: its kind (a COLORS key), XYXY box in image pixels (a rotated box's
    enclosing one), label, error type ("" if none), and the XYWHA box of a rotated one.
    """

    kind: str
    box: Tuple[float, float, float, float]
    label: str
    error: str
    rotated: Optional[Tuple[float, float, float, float, float]] = None


def image_errors(a):
    """(kept (D,) detections at the thresholds, tp (D,), fp (D,), missed (G,), errors per image)."""
    kept = a.dets.scores >= a.threshold[a.dets.cls]
    tp = a.matches.det_tp & kept
    fp = kept & ~a.matches.det_tp & ~a.matches.det_ignored
    missed = ~a.gt.crowd.copy()
    missed[a.matches.det_gt[tp]] = False
    num = len(a.gt.image_ids)
    per_image = np.bincount(a.dets.image[fp], minlength=num) + np.bincount(a.gt.image[missed], minlength=num)
    return kept, tp, fp, missed, per_image


def worst_images(a, count: int) -> List[int]:
    """Indices of the (at most) `count` images with the most errors (false positives + missed), at least one."""
    per_image = image_errors(a)[4]
    order = np.lexsort((np.arange(len(per_image)), -per_image))
    return [int(i) for i in order[:count] if per_image[i] > 0]


def _xyxy(box):
    if len(box) == 5:
        return tuple(BoxMode.convert(np.asarray([box], np.float64), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)[0].tolist())
    x, y, w, h = box
    return x, y, x + w, y + h


def _mark(kind: str, box, label: str, error: str) -> Mark:
    """The Mark of an XYWH or XYWHA box."""
    return Mark(kind, _xyxy(box), label, error, tuple(float(v) for v in box) if len(box) == 5 else None)


def image_marks(a, i: int) -> List[Mark]:
    """Image i's missed boxes, then its kept true and false positives (labelled with their TIDE type)."""
    _, tp, fp, missed, _ = image_errors(a)
    names = a.class_names
    g, d = image_slices(a.gt.image, len(a.gt.image_ids)), image_slices(a.dets.image, len(a.gt.image_ids))
    marks = [_mark("missed", a.gt.boxes[j], f"missed {names[a.gt.cls[j]]}", "missed")
             for j in range(g[i], g[i + 1]) if missed[j]]  # fmt: skip
    for r in range(d[i], d[i + 1]):
        if tp[r] or fp[r]:
            error = ERROR_TYPES[a.errors.det_error[r]] if fp[r] else ""
            label = f"{names[a.dets.cls[r]]} {a.dets.scores[r]:.2f}"
            label = f"{error}: {label}" if error else label
            marks.append(_mark("true positive" if tp[r] else "false positive", a.dets.boxes[r], label, error))
    return marks


def _draw(rgb: np.ndarray, marks: List[Mark], scale: float, labels: bool, origin=(0.0, 0.0)) -> Visualizer:
    """Visualizer with `marks` (shifted by -origin) drawn on `rgb` at `scale`, with their labels or without."""
    vis = Visualizer(rgb, metadata=None, scale=scale)
    ox, oy = origin
    for m in marks:
        x0, y0, x1, y1 = m.box[0] - ox, m.box[1] - oy, m.box[2] - ox, m.box[3] - oy
        style = dict(alpha=1.0, edge_color=COLORS[m.kind], line_style="--" if m.kind == "missed" else "-")
        if m.rotated is None:
            vis.draw_box((x0, y0, x1, y1), **style)
        else:
            cx, cy, w, h, angle = m.rotated
            vis.draw_rotated_box_with_label((cx - ox, cy - oy, w, h, angle), **style)
        if labels:
            y = y1 if m.kind == "missed" else y0
            vis.draw_text(m.label, (x0, y), font_size=FONT_SIZE / scale, color=COLORS[m.kind], horizontal_alignment="left")
    return vis


def _zoom(rgb: np.ndarray, marks: List[Mark], out_side: int):
    """(window XYXY, its drawing out_side wide): the window with most errors, the largest whose labels fit (else unlabelled)."""
    h, w = rgb.shape[:2]
    centres = np.array([[(m.box[0] + m.box[2]) / 2, (m.box[1] + m.box[3]) / 2] for m in marks if m.error]).reshape(-1, 2)
    for zoom in ZOOMS:
        x0, y0, x1, y1 = busiest_window(centres, h, w, int(np.ceil(max(h, w) / zoom)))
        inside = [m for m in marks if m.box[0] < x1 and m.box[2] > x0 and m.box[1] < y1 and m.box[3] > y0]
        scale = out_side / (x1 - x0)
        labels = labels_fit([m.label for m in inside], FONT_SIZE / scale, y1 - y0, x1 - x0)
        if labels or zoom == ZOOMS[-1]:
            vis = _draw(rgb[y0:y1, x0:x1], inside, scale, labels, origin=(x0, y0))
            return (x0, y0, x1, y1), vis.output.get_image()


def _legend(marks: List[Mark], window) -> list:
    """The legend's items: each kind with its count (false positives per TIDE type), and the zoomed window."""
    count = {kind: sum(m.kind == kind for m in marks) for kind in COLORS}
    fp_types = [m.error for m in marks if m.kind == "false positive"]
    types = ", ".join(f"{t} {fp_types.count(t)}" for t in ERROR_TYPES if t in fp_types)
    items = [(f"{kind} {count[kind]}" + (f" ({types})" if kind == "false positive" and types else ""), color,
              "--" if kind == "missed" else "-") for kind, color in COLORS.items()]  # fmt: skip
    if window is not None:
        x0, y0, x1, y1 = window
        items.append((f"enlarged below: x {x0}-{x1}, y {y0}-{y1} (most errors)", WINDOW_COLOR, "-"))
    return items


def draw_image_errors(a, i: int, rgb: np.ndarray) -> np.ndarray:
    """
    The RGB drawing of image i (rgb (H, W, 3) uint8): its true positives, false positives and
    misses, with labels while they fit (`labels_fit`); without them, the window with most
    errors enlarged below; then the legend strip. Returns (H', W', 3) uint8, W' = W x scale.
    """
    marks = image_marks(a, i)
    h, w = rgb.shape[:2]
    scale = max(1.0, MIN_SIDE / max(h, w))
    labels = labels_fit([m.label for m in marks], FONT_SIZE / scale, h, w)
    whole = _draw(rgb, marks, scale, labels)
    parts, window = [], None
    if not labels:
        width = whole.output.get_image().shape[1]
        window, zoomed = _zoom(rgb, marks, min(width, max(MIN_SIDE, round(h * scale))))
        whole.draw_box(window, alpha=1.0, edge_color=WINDOW_COLOR)
        parts.append(np.pad(zoomed, ((0, 0), (0, width - zoomed.shape[1]), (0, 0)), constant_values=255))
    parts.insert(0, whole.output.get_image())
    parts.append(legend_strip(_legend(marks, window), parts[0].shape[1], FONT_SIZE))
    return np.concatenate(parts, axis=0)


def write_worst_images(a, out_dir: str, count: int) -> List[str]:
    """Draw the `count` worst images into out_dir (created) as <rank>_<file name>.png; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for rank, i in enumerate(worst_images(a, count)):
        file_name = a.gt.file_names[i]
        bgr = cv2.imread(file_name, cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputFileError(f"image {a.gt.image_ids[i]}: cannot read {file_name!r} to draw it")
        stem = os.path.splitext(os.path.basename(file_name))[0]
        path = os.path.join(out_dir, f"{rank:02d}_{stem}.png")
        cv2.imwrite(path, cv2.cvtColor(draw_image_errors(a, i, bgr[:, :, ::-1].copy()), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
