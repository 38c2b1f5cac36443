"""
Per-class score thresholds: the F1-optimal one of a class (`best_f1`), and the YAML file that
holds them, a mapping class name -> threshold in [0, 1] (written by tools/analyze_results.py as
thresholds.yaml, read by `load_class_thresholds`).
"""
import math
from typing import Sequence

import numpy as np
import yaml
from ...errors import InputFileError

__all__ = ["best_f1", "write_class_thresholds", "load_class_thresholds"]


def best_f1(scores: np.ndarray, tps: np.ndarray, num_gt: int):
    """
    (threshold, precision, recall, f1) at the rank of the best F1 among ranked detections
    (`scores` (N,) descending, `tps` (N,) bool, as `CocoEvaluation.ranked_detections` gives
    them), the threshold being that detection's score (keep scores >= it). COCOeval's arrays
    hold precision only at 101 recall points, not at every score, hence this walk over the
    ranks. Without a true positive: threshold 1.0, precision, recall and F1 0.
    """
    tps = np.asarray(tps, bool)
    if num_gt == 0 or not np.any(tps):
        return 1.0, 0.0, 0.0, 0.0
    tp = np.cumsum(tps, dtype=np.float64)
    fp = np.cumsum(~tps, dtype=np.float64)
    precision, recall = tp / (tp + fp + np.spacing(1)), tp / num_gt  # as COCOeval.accumulate
    f1 = 2 * precision * recall / np.maximum(precision + recall, np.spacing(1))
    # Among tied scores only the last rank of the tie is reachable by a threshold.
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    f1 = np.where(last_of_tie, f1, -1.0)
    i = int(np.argmax(f1))
    return float(scores[i]), float(precision[i]), float(recall[i]), float(f1[i])



def write_class_thresholds(path: str, class_names: Sequence[str], thresholds: Sequence[float], header: str = ""):
    """Write `path`: the comment lines of `header`, then `name: threshold` per class in class order."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.safe_dump({str(n): round(float(t), 6) for n, t in zip(class_names, thresholds)}, sort_keys=False)
    with open(path, "w") as f:
        f.write("\n".join(lines + [body]))
    return path


def load_class_thresholds(path: str, class_names: Sequence[str]) -> list:
    """
    The per-class thresholds of `path` in the order of `class_names`. Every class needs one
    number in [0, 1] and every name must be a class; else a InputFileError naming the
    file and the entry.
    """
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise InputFileError(f"{path}: cannot read it ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise InputFileError(f"{path}: not a YAML file ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: expected a mapping 'class name: threshold', got {type(data).__name__}")
    names = [str(n) for n in class_names]
    thresholds = {}
    for key, value in data.items():
        if str(key) not in names:
            raise InputFileError(f"{path}: {key!r} is not a class of the model (classes: {', '.join(names)})")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or math.isnan(value) or not 0.0 <= value <= 1.0:
            raise InputFileError(f"{path}: {key!r}: the threshold must be a number in [0, 1], got {value!r}")
        thresholds[str(key)] = float(value)
    missing = [n for n in names if n not in thresholds]
    if missing:
        raise InputFileError(f"{path}: no threshold for class(es) {', '.join(map(repr, missing))}")
    return [thresholds[n] for n in names]
