"""
`AnchorCoverage`: the boxes of a dataset matched to one anchor setting, per box, and its
summary: coverage, best-IoU quantiles and histogram, foreground anchors and positives per box,
by COCO's size categories (small < 32^2 <= medium < 96^2 <= large, by the box area width x
height in the resized image, where the anchors are) and per level.
"""
import math
from dataclasses import dataclass
from typing import Dict, List

import torch

__all__ = ["SIZE_CATEGORIES", "AnchorCoverage"]

# COCO's size categories by area (pixels^2), here of the box in the resized image.
SIZE_CATEGORIES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
IOU_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)
IOU_HISTOGRAM_BINS = 20


def _quantiles(values: torch.Tensor) -> Dict[str, float]:
    if len(values) == 0:
        return {}
    q = torch.quantile(values.double(), torch.tensor(IOU_QUANTILES, dtype=torch.float64))
    return {f"{p:g}": float(v) for p, v in zip(IOU_QUANTILES, q)}


def _count_stats(counts: torch.Tensor) -> Dict[str, float]:
    if len(counts) == 0:
        return {"mean": None, "median": None, "max": None, "boxes_with_none": 0}
    return {
        "mean": float(counts.double().mean()),
        "median": float(counts.double().median()),
        "max": int(counts.max()),
        "boxes_with_none": int((counts == 0).sum()),
    }


@dataclass
class AnchorCoverage:
    """
    The boxes of a `ResizedBoxes` matched to one anchor setting; the per-box tensors are
    concatenated over images, N boxes in all, L levels.
    """

    anchors: Dict[str, object]  # the config keys that made the anchors
    level_names: List[str]
    strides: List[int]
    fg_threshold: float
    bg_threshold: float
    allow_low_quality_matches: bool
    image_index: torch.Tensor  # (N,) the image of each box
    boxes: torch.Tensor  # (N, 4) XYXY in resized pixels
    best_iou: torch.Tensor  # (N,)
    best_anchor: torch.Tensor  # (N, 4)
    best_level: torch.Tensor  # (N,)
    num_fg: torch.Tensor  # (N, L) anchors with IoU >= fg_threshold with the box
    num_positive: torch.Tensor  # (N, L) anchors training labels foreground for the box
    images_with_every_anchor_positive: int

    @property
    def covered(self) -> torch.Tensor:
        """(N,) bool: the box has an anchor of IoU >= the foreground threshold."""
        return self.best_iou >= self.fg_threshold

    @property
    def areas(self) -> torch.Tensor:
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])

    def _iou_stats(self, mask: torch.Tensor) -> Dict[str, object]:
        best = self.best_iou[mask]
        covered = int((best >= self.fg_threshold).sum())
        counts = torch.histc(best.double(), bins=IOU_HISTOGRAM_BINS, min=0.0, max=1.0)
        return {
            "num_boxes": len(best),
            "num_covered": covered,
            "coverage": covered / len(best) if len(best) else None,
            "mean_best_iou": float(best.double().mean()) if len(best) else None,
            "best_iou_quantiles": _quantiles(best),
            "best_iou_histogram": [int(c) for c in counts],
            "fg_anchors_per_box": _count_stats(self.num_fg[mask].sum(1)),
            "positives_per_box": _count_stats(self.num_positive[mask].sum(1)),
        }

    def summary(self) -> Dict[str, object]:
        """Every number of the analysis, JSON-serialisable."""
        everything = torch.ones(len(self.best_iou), dtype=torch.bool)
        areas = self.areas
        total_fg, total_pos = self.num_fg.sum(1), self.num_positive.sum(1)
        positives_per_level = self.num_positive.sum(0)
        levels = []
        for i, (name, stride) in enumerate(zip(self.level_names, self.strides)):
            levels.append({
                "name": name,
                "stride": stride,
                "positives": int(positives_per_level[i]),
                "share_of_positives": float(positives_per_level[i] / max(int(positives_per_level.sum()), 1)),
                "boxes_with_positives": int((self.num_positive[:, i] > 0).sum()),
                "boxes_with_best_anchor": int((self.best_level == i).sum()),
            })
        return {
            "anchors": self.anchors,
            "all": self._iou_stats(everything),
            "by_size": {name: self._iou_stats((areas >= low) & (areas < high))
                        for name, low, high in SIZE_CATEGORIES},
            "boxes_with_low_quality_positives_only": int(((total_fg == 0) & (total_pos > 0)).sum()),
            "levels": levels,
            "images_with_every_anchor_positive": self.images_with_every_anchor_positive,
        }

