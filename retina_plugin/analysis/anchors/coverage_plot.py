"""The picture of a report: best-IoU histograms, coverage by size, the worst-covered images."""
import math

import cv2
import numpy as np
import torch

from .coverage_report import AnchorCoverageReport
from .coverage_statistics import IOU_HISTOGRAM_BINS, SIZE_CATEGORIES

__all__ = ["plot_anchor_coverage"]


def _sample_image(report: AnchorCoverageReport, image: int, max_side: int = 640) -> np.ndarray:
    """RGB picture of one resized image with its uncovered boxes (red, with the best anchor in yellow)."""
    resized, coverage = report.resized, report.current
    height, width = resized.image_sizes[image]
    picture = cv2.imread(resized.file_names[image], cv2.IMREAD_COLOR) if resized.file_names[image] else None
    if picture is None:
        picture = np.full((height, width, 3), 128, np.uint8)
    picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_LINEAR)
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        picture = cv2.resize(picture, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    in_image = (coverage.image_index == image).nonzero().flatten()
    for i in in_image.tolist():
        box = (coverage.boxes[i] * scale).round().int().tolist()
        if coverage.covered[i]:
            cv2.rectangle(picture, tuple(box[:2]), tuple(box[2:]), (0, 200, 0), 1)
            continue
        anchor = (coverage.best_anchor[i] * scale).round().int().tolist()
        cv2.rectangle(picture, tuple(anchor[:2]), tuple(anchor[2:]), (0, 220, 255), 1)
        cv2.rectangle(picture, tuple(box[:2]), tuple(box[2:]), (0, 0, 255), 2)
        # Rounded down: a box of IoU 0.499 is uncovered and must not read 0.50.
        label = f"{math.floor(100 * float(coverage.best_iou[i])) / 100:.2f}"
        cv2.putText(picture, label, (box[0], max(box[1] - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1, cv2.LINE_AA)
    return picture[:, :, ::-1]


def plot_anchor_coverage(report: AnchorCoverageReport, path: str, num_images: int = 4) -> str:
    """
    Write a PNG to `path`: the best-IoU histogram of the current (and suggested) anchors, the
    coverage by box size, and the `num_images` images with the most uncovered boxes, drawn
    with those boxes (red, best IoU above), their best anchor (yellow) and covered boxes (green).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    current, suggested = report.current, report.suggested
    uncovered = torch.bincount(current.image_index[~current.covered], minlength=len(report.resized.boxes))
    order = sorted(range(len(uncovered)), key=lambda i: (-int(uncovered[i]), i))
    samples = [i for i in order[:num_images] if uncovered[i] > 0]

    columns = max(len(samples), 2)
    fig = Figure(figsize=(4.5 * columns, 8.5 if samples else 4.2))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if samples else 1, columns * 2, height_ratios=[1, 1.2] if samples else None)
    ax = fig.add_subplot(grid[0, :columns])
    bins = np.linspace(0.0, 1.0, IOU_HISTOGRAM_BINS + 1)
    ax.hist(current.best_iou.numpy(), bins=bins, alpha=0.6, label="current anchors")
    if suggested is not None:
        ax.hist(suggested.best_iou.numpy(), bins=bins, alpha=0.6, label="suggested anchors")
    ax.axvline(current.fg_threshold, color="k", linestyle="--", linewidth=1, label="foreground threshold")
    ax.axvline(current.bg_threshold, color="gray", linestyle=":", linewidth=1, label="background threshold")
    ax.set_xlabel("best anchor IoU of a ground-truth box")
    ax.set_ylabel("boxes")
    ax.set_title(f"{report.resized.dataset_name}: {report.resized.num_boxes} boxes")
    ax.legend(fontsize=8)

    ax = fig.add_subplot(grid[0, columns:])
    names = ["all"] + [name for name, _, _ in SIZE_CATEGORIES]
    x = np.arange(len(names))

    def coverages(coverage):
        summary = coverage.summary()
        stats = [summary["all"]] + [summary["by_size"][n] for n in names[1:]]
        return [100 * (s["coverage"] or 0.0) for s in stats], [s["num_boxes"] for s in stats]

    values, counts = coverages(current)
    width = 0.4 if suggested is not None else 0.6
    ax.bar(x - (width / 2 if suggested is not None else 0), values, width, label="current anchors")
    if suggested is not None:
        ax.bar(x + width / 2, coverages(suggested)[0], width, label="suggested anchors")
    ax.set_xticks(x, [f"{n}\n({c} boxes)" for n, c in zip(names, counts)], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"% boxes with an anchor of IoU >= {current.fg_threshold:g}")
    ax.set_title("coverage by box size (area in the resized image)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")

    for k, image in enumerate(samples):
        ax = fig.add_subplot(grid[1, 2 * k: 2 * k + 2])
        ax.imshow(_sample_image(report, image))
        ax.set_title(f"image {image}: {int(uncovered[image])} uncovered", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
