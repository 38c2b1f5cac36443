"""
The search for an anchor setting (MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS) that covers more
boxes, on the closed-form best IoU of `anchor_geometry`.
"""
import math
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .anchor_geometry import iou_at_distances, nearest_centre_distances
from .anchor_settings import AnchorSetting, per_level, round_significant

__all__ = ["suggest_anchor_setting"]

# The search evaluates each candidate on at most this many boxes (evenly spaced).
SEARCH_MAX_BOXES = 20000


def _kmeans_1d(values: np.ndarray, centres: np.ndarray, iterations: int = 50) -> np.ndarray:
    for _ in range(iterations):
        assign = np.abs(values[:, None] - centres[None, :]).argmin(1)
        new = np.array([values[assign == k].mean() if (assign == k).any() else c for k, c in enumerate(centres)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def _aspect_ratio_sets(log_aspect: np.ndarray,
                       current: Tuple[Tuple[float, ...], ...]) -> List[Tuple[Tuple[float, ...], ...]]:
    """
    Candidate aspect ratios (as `AnchorSetting.aspect_ratios`) for boxes of log(height / width)
    `log_aspect`: the current ones and, when every level has n of them, sets of n for every level.
    """
    candidates = [current]
    if len({len(r) for r in current}) != 1:
        return candidates
    n = len(current[0])
    quantile_logs = np.quantile(log_aspect, (np.arange(n) + 0.5) / n)
    median = float(np.median(log_aspect))
    offsets = np.arange(n) - (n - 1) / 2
    sets = [
        quantile_logs,
        _kmeans_1d(log_aspect, quantile_logs),
        median + offsets * math.log(2.0),  # the paper's 1:2, 1:1, 2:1 spread, centred on the median
        median + offsets * math.log(2.0) / 2,
    ]
    for logs in sets:
        ratios = (tuple(round_significant(math.exp(v), 3) for v in logs),)
        if ratios not in candidates:
            candidates.append(ratios)
    return candidates


def _octave_scale_sets(current: Tuple[Tuple[float, ...], ...]) -> List[Tuple[Tuple[float, ...], ...]]:
    """The current octave scales and, when every level has n, the sets 2^(k * step), k = 0..n-1."""
    candidates = [current]
    if len({len(s) for s in current}) != 1:
        return candidates
    n = len(current[0])
    for step in (1.0 / (2 * n), 1.0 / n, 2.0 / n):
        scales = (tuple(round(2.0 ** (k * step), 4) for k in range(n)),)
        if scales not in candidates:
            candidates.append(scales)
    return candidates


def _scaled_sizes(sizes: Sequence[float], factor: float) -> Tuple[float, ...]:
    return tuple(max(round(s * factor, 1), 0.5) for s in sizes)


@dataclass(frozen=True)
class _Factors:
    """
    An anchor setting as the search varies it (paper section 4): per level a base size, the
    octave scales that multiply it, and the aspect ratios; scales and ratios are one tuple for
    every level or one per level.
    """

    bases: Tuple[float, ...]
    octave_scales: Tuple[Tuple[float, ...], ...]
    aspect_ratios: Tuple[Tuple[float, ...], ...]

    @classmethod
    def of(cls, setting: AnchorSetting) -> "_Factors":
        """Each level's first size as its base, the others as multiples of it."""
        bases = tuple(level[0] for level in setting.sizes)
        scales = [tuple(s / level[0] for s in level) for level in setting.sizes]
        shared = all(len(s) == len(scales[0]) and np.allclose(s, scales[0], rtol=1e-9, atol=0) for s in scales)
        return cls(bases, tuple(scales[:1] if shared else scales), setting.aspect_ratios)

    def setting(self) -> AnchorSetting:
        """The sizes base x scale, rounded to 0.01 px as they are printed."""
        scales = per_level(self.octave_scales, len(self.bases))
        return AnchorSetting(
            tuple(tuple(round(b * s, 2) for s in level) for b, level in zip(self.bases, scales)), self.aspect_ratios
        )

    def change(self, other: "_Factors") -> float:
        """How far from `other`: summed |log2| of the value ratios."""
        num_levels = len(self.bases)
        pairs = [(self.bases, other.bases)]
        for new, old in ((self.octave_scales, other.octave_scales), (self.aspect_ratios, other.aspect_ratios)):
            if len(new) == len(old) == 1:
                pairs.append((new[0], old[0]))
            else:
                pairs += list(zip(per_level(new, num_levels), per_level(old, num_levels)))
        return sum(
            float(np.abs(np.log2(np.asarray(new, dtype=np.float64) / np.asarray(old, dtype=np.float64))).sum())
            for new, old in pairs
        )


def _neighbours(base: _Factors) -> List[_Factors]:
    """The hill climb's steps from `base`: all sizes by 2^(j/16), j = -2, -1, 1, 2; each aspect ratio by 2^(+-1/8)."""
    steps = [_Factors(_scaled_sizes(base.bases, 2.0 ** (j / 16)), base.octave_scales, base.aspect_ratios)
             for j in (-2, -1, 1, 2)]  # fmt: skip
    for level, level_ratios in enumerate(base.aspect_ratios):
        for k in range(len(level_ratios)):
            for step in (-1, 1):
                ratios = [list(r) for r in base.aspect_ratios]
                ratios[level][k] = round_significant(ratios[level][k] * 2.0 ** (step / 8), 3)
                steps.append(_Factors(base.bases, base.octave_scales, tuple(tuple(r) for r in ratios)))
    return steps


def suggest_anchor_setting(boxes: torch.Tensor, grid_sizes: torch.Tensor, strides: Sequence[int], offset: float,
                           current: AnchorSetting, fg_threshold: float) -> Tuple[AnchorSetting, Dict[str, object]]:
    """
    Search anchor settings that keep the number of anchors per location (the head's output
    size) and the levels, and return the one covering most boxes (IoU >= fg_threshold; among
    those covering as many, the one changing the current values least, so a dataset the current
    anchors already cover keeps them).

    The search varies, as the paper describes anchors, a base size per level (each level's first
    size), octave scales and aspect ratios. Candidates: aspect ratios from the current ones, the
    quantiles and the 1-D k-means of the boxes' log(height / width), and 2x / sqrt(2)x spreads
    around its median; octave scales the current ones, 2^(k/n) (the paper's), 2^(k/2n),
    2^(2k/n); all base sizes scaled together by 2^(j/4), j = -16..8. The best is then refined by
    hill climbing (finer size factors, each aspect ratio up or down by 2^(1/8)). Values are
    rounded as they are printed (sizes base x scale to 0.01 px), before they are evaluated, so
    the printed setting reproduces the reported coverage. The search is deterministic: the same
    boxes give the same setting.

    Args:
        boxes: (N, 4) XYXY in resized pixels; grid_sizes: (N, L, 2) as in `best_iou_on_grid`.
        current: the config's setting (`AnchorSetting.from_config`), one size tuple per level of
            the grid.
    Returns:
        (the best setting, as MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS; a dict with the
        predicted coverage before and after, the number of candidates evaluated and the search time).
    """
    start_time = time.perf_counter()
    if len(boxes) > SEARCH_MAX_BOXES:
        keep = torch.linspace(0, len(boxes) - 1, SEARCH_MAX_BOXES).round().long()
        boxes, grid_sizes = boxes[keep], grid_sizes[keep]
    dx, dy = nearest_centre_distances(boxes, grid_sizes, strides, offset)
    widths, heights = (boxes[:, 2] - boxes[:, 0]).double(), (boxes[:, 3] - boxes[:, 1]).double()
    log_aspect = torch.log(heights / widths).numpy()
    origin = _Factors.of(current)
    scores: Dict[_Factors, Tuple[int, float]] = {}

    def setting_of(factors: _Factors) -> AnchorSetting:
        return current if factors == origin else factors.setting()

    def score(factors: _Factors) -> Tuple[int, float]:
        if factors not in scores:
            cells = setting_of(factors).level_cell_anchors()
            best = iou_at_distances(widths, heights, dx, dy, cells).flatten(1).amax(1)
            # More boxes covered first; between equals, the smaller change.
            scores[factors] = (int((best >= fg_threshold).sum()), -round(factors.change(origin), 9))
        return scores[factors]

    best_factors, best_score = origin, score(origin)

    def consider(factors):
        nonlocal best_factors, best_score
        if score(factors) > best_score:
            best_factors, best_score = factors, score(factors)

    for ratios in _aspect_ratio_sets(log_aspect, origin.aspect_ratios):
        for scales in _octave_scale_sets(origin.octave_scales):
            for j in range(-16, 9):
                consider(_Factors(_scaled_sizes(origin.bases, 2.0 ** (j / 4)), scales, ratios))

    for _ in range(10):
        previous = best_factors
        for factors in _neighbours(best_factors):
            consider(factors)
        if best_factors == previous:
            break

    num_boxes = len(boxes)
    before, after = score(origin), best_score
    return setting_of(best_factors), {
        "searched_boxes": num_boxes,
        "candidates_evaluated": len(scores),
        "search_seconds": time.perf_counter() - start_time,
        "predicted_coverage_before": before[0] / num_boxes,
        "predicted_coverage_after": after[0] / num_boxes,
    }
