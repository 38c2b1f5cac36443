"""
The calibration file: the activation ranges as JSON, tied to the weights they were recorded
for by a fingerprint, checked when read.
"""
import hashlib
import json
import os
from typing import Optional

from torch import nn

from .activations import Int8Error, Ranges

CALIBRATION_FORMAT = "retina_plugin int8 calibration"


def save_int8_calibration(path: str, ranges: Ranges, **info) -> None:
    """Write `ranges` (and `info`, e.g. the weights and images used) as JSON to `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {"format": CALIBRATION_FORMAT, "version": 1, **info, "ranges": {k: list(v) for k, v in ranges.items()}}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of the float model's state_dict (names and values), to tie a calibration to its weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_int8_calibration(path: str, model: Optional[nn.Module] = None) -> Ranges:
    """
    The ranges written by save_int8_calibration; Int8Error naming the file when it is not one,
    or when it holds a `weights_fingerprint` and the float `model` given holds other weights.
    """
    if not os.path.isfile(path):
        raise Int8Error(f"int8 calibration file not found: {path} (write one with tools/calibrate_int8.py)")
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Int8Error(f"int8 calibration file {path} is not JSON: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != CALIBRATION_FORMAT:
        raise Int8Error(f"int8 calibration file {path}: not written by tools/calibrate_int8.py (no \"format\": {CALIBRATION_FORMAT!r})")
    ranges = {}
    for key, value in payload.get("ranges", {}).items():
        ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
        if not ok or not all(map(_finite, value)) or value[0] > value[1]:
            raise Int8Error(f"int8 calibration file {path}: range {key!r} = {value!r} is not [low, high] with finite low <= high")
        ranges[key] = (float(value[0]), float(value[1]))
    fingerprint = payload.get("weights_fingerprint")
    if model is not None and fingerprint is not None and fingerprint != weights_fingerprint(model):
        raise Int8Error(
            f"int8 calibration file {path} was made for other weights (it names {payload.get('weights')!r}); "
            "recalibrate for these with tools/calibrate_int8.py"
        )
    return ranges


def _finite(v) -> bool:
    return v == v and abs(v) != float("inf")
