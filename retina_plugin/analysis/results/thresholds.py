"""
Per-class score thresholds in a YAML file: a mapping class name -> threshold in [0, 1]
(written by tools/analyze_results.py as thresholds.yaml, read by `load_class_thresholds`).
"""
import math
from typing import Sequence

import yaml
from ...errors import UserError

__all__ = ["ThresholdFileError", "write_class_thresholds", "load_class_thresholds"]


class ThresholdFileError(UserError):
    """A thresholds file that cannot be used; the message names the file and the bad entry."""


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
    number in [0, 1] and every name must be a class; else a ThresholdFileError naming the
    file and the entry.
    """
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ThresholdFileError(f"{path}: cannot read it ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ThresholdFileError(f"{path}: not a YAML file ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict):
        raise ThresholdFileError(f"{path}: expected a mapping 'class name: threshold', got {type(data).__name__}")
    names = [str(n) for n in class_names]
    thresholds = {}
    for key, value in data.items():
        if str(key) not in names:
            raise ThresholdFileError(f"{path}: {key!r} is not a class of the model (classes: {', '.join(names)})")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ThresholdFileError(f"{path}: {key!r}: the threshold must be a number in [0, 1], got {value!r}")
        thresholds[str(key)] = float(value)
    missing = [n for n in names if n not in thresholds]
    if missing:
        raise ThresholdFileError(f"{path}: no threshold for class(es) {', '.join(map(repr, missing))}")
    return [thresholds[n] for n in names]
