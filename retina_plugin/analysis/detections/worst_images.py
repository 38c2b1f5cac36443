"""
The images with the most errors at the per-class thresholds, drawn with Detectron2's
Visualizer: true positives, false positives (labelled with their TIDE type) and missed
ground-truth boxes in three colours, with a legend below the image.
"""
import os
from typing import List

import cv2
import numpy as np
from detectron2.utils.visualizer import Visualizer

from ...errors import InputFileError
from .detection_data import image_slices
from .tide import ERROR_TYPES

__all__ = ["COLORS", "image_errors", "worst_images", "draw_image_errors", "write_worst_images"]

COLORS = {"true positive": (0.1, 0.8, 0.1), "false positive": (0.95, 0.15, 0.1), "missed": (0.15, 0.55, 1.0)}
MIN_SIDE = 512  # small images are drawn enlarged to at least this size


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
    x, y, w, h = box
    return x, y, x + w, y + h


def draw_image_errors(a, i: int, rgb: np.ndarray) -> np.ndarray:
    """The RGB drawing of image i's true positives, false positives and misses, a legend strip below it."""
    _, tp, fp, missed, _ = image_errors(a)
    h, w = rgb.shape[:2]
    scale = max(1.0, MIN_SIDE / max(h, w))
    strip = int(np.ceil(0.1 * max(h, w))) + 4
    canvas = np.concatenate([rgb, np.full((strip, w, 3), 255, np.uint8)], axis=0)
    vis = Visualizer(canvas, metadata=None, scale=scale)
    font = max(6.0, 0.024 * max(h, w))
    names = a.class_names
    g, d = image_slices(a.gt.image, len(a.gt.image_ids)), image_slices(a.dets.image, len(a.gt.image_ids))
    for j in range(g[i], g[i + 1]):
        if missed[j]:
            vis.draw_box(_xyxy(a.gt.boxes[j]), alpha=1.0, edge_color=COLORS["missed"], line_style="--")
            x0, _, _, y1 = _xyxy(a.gt.boxes[j])
            label = f"missed {names[a.gt.cls[j]]}"
            vis.draw_text(label, (x0, y1), font_size=font, color=COLORS["missed"], horizontal_alignment="left")
    for r in range(d[i], d[i + 1]):
        if not (tp[r] or fp[r]):
            continue
        kind = "true positive" if tp[r] else "false positive"
        label = f"{names[a.dets.cls[r]]} {a.dets.scores[r]:.2f}"
        if fp[r]:
            label = f"{ERROR_TYPES[a.errors.det_error[r]]}: {label}"
        x0, y0, _, _ = _xyxy(a.dets.boxes[r])
        vis.draw_box(_xyxy(a.dets.boxes[r]), alpha=1.0, edge_color=COLORS[kind])
        vis.draw_text(label, (x0, y0), font_size=font, color=COLORS[kind], horizontal_alignment="left")
    for n, (kind, color) in enumerate(COLORS.items()):
        x = 4 + n * w / 3
        vis.draw_box((x, h + strip * 0.3, x + 0.04 * w, h + strip * 0.7), alpha=1.0, edge_color=color,
                     line_style="--" if kind == "missed" else "-")  # fmt: skip
        vis.draw_text(kind, (x + 0.05 * w, h + strip * 0.25), font_size=font, color=color, horizontal_alignment="left")
    return vis.output.get_image()


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
