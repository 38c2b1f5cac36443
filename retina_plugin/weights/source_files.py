"""
Reading the weights files of torchvision and DeepForest RetinaNets, safely: `.pth` / `.pt` /
`.ckpt` with `torch.load(weights_only=True)`, `.safetensors` with safetensors, and the Hugging
Face folders DeepForest writes with `PyTorchModelHubMixin` (`model.safetensors` + `config.json`).
"""
import json
import os
import pickle
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from .torchvision_keys import WeightsFormatError

# DeepForest's defaults (its conf/config.yaml), which it passes to the model it loads.
DEEPFOREST_DEFAULTS = {"score_thresh": 0.1, "nms_thresh": 0.05, "detections_per_img": 300, "topk_candidates": 1000}


@dataclass
class SourceWeights:
    """A source model's state_dict, the file it came from, and what its files say besides."""

    state: Dict[str, torch.Tensor]
    path: str
    class_names: Optional[List[str]] = None
    settings: Dict[str, float] = field(default_factory=dict)  # DeepForest's thresholds and counts


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """
    The state_dict in a weights file: a `.safetensors` file, or a torch file holding a state_dict
    or a checkpoint dict with one under "model" (torchvision's reference scripts) or
    "state_dict" (Lightning). Keys all prefixed "model." (older DeepForest, Lightning) lose it.
    """
    if not os.path.isfile(path):
        raise WeightsFormatError(f"{path}: no such weights file")
    return state_dict_in(_read_safetensors(path) if path.endswith(".safetensors") else read_torch_file(path), path)


def state_dict_in(data: dict, path: str) -> Dict[str, torch.Tensor]:
    """The state_dict of a loaded weights file (see `read_state_dict`)."""
    for key in ("state_dict", "model"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    if not data or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise WeightsFormatError(f"{path}: holds no state_dict (a dict of names to tensors)")
    if all(k.startswith("model.") for k in data):
        data = {k[len("model."):]: v for k, v in data.items()}
    return data


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())})") from None


def read_torch_file(path: str) -> dict:
    """A torch file's contents, read with torch.load(weights_only=True): tensors, numbers, strings, containers."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        reason = " ".join(str(e).splitlines()[0].split()) if str(e) else type(e).__name__
        raise WeightsFormatError(f"{path}: not loadable with torch.load(weights_only=True): {reason}") from None
    if not isinstance(data, dict):
        raise WeightsFormatError(f"{path}: holds a {type(data).__name__}, not a state_dict")
    return data


def read_deepforest(path: str) -> SourceWeights:
    """
    A DeepForest RetinaNet: a folder with `model.safetensors` and `config.json` (DeepForest 2.x,
    `PyTorchModelHubMixin`), or a weights file (with a `config.json` beside it, or a Lightning
    checkpoint's "label_dict"). Class names from `label_dict` ({name: id}); score and NMS
    thresholds, detections per image and top-k from config.json, else DeepForest's defaults.
    """
    if not os.path.exists(path):
        raise WeightsFormatError(f"{path}: no such file or folder")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    weights = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    if not os.path.isfile(weights):
        raise WeightsFormatError(f"{path}: a DeepForest folder holds model.safetensors; this one does not")
    data = _read_safetensors(weights) if weights.endswith(".safetensors") else read_torch_file(weights)
    config_file = os.path.join(folder, "config.json")
    if os.path.isfile(config_file):
        config = read_deepforest_config(config_file)
    else:
        config_file = weights
        config = {"label_dict": data["label_dict"]} if isinstance(data.get("label_dict"), dict) else {}
    settings = {k: config.get(k, default) for k, default in DEEPFOREST_DEFAULTS.items()}
    names = label_dict_names(config.get("label_dict"), config_file)
    return SourceWeights(state_dict_in(data, weights), weights, names, settings)


def read_deepforest_config(config_file: str) -> dict:
    """The config.json of a DeepForest model (num_classes, label_dict, thresholds), checked to be DeepForest's."""
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsFormatError(f"{config_file}: not JSON ({e})") from None
    if not isinstance(config, dict) or not ({"label_dict", "num_classes"} & set(config)):
        found = sorted(config)[:5] if isinstance(config, dict) else type(config).__name__
        raise WeightsFormatError(f"{config_file}: not a DeepForest config.json: no 'label_dict' or 'num_classes' (found {found})")
    for key in DEEPFOREST_DEFAULTS:
        if key in config and not isinstance(config[key], (int, float)):
            raise WeightsFormatError(f"{config_file}: {key} = {config[key]!r}: must be a number")
    return config


def label_dict_names(label_dict, source: str) -> Optional[List[str]]:
    """Class names by id from DeepForest's label_dict {name: id}, ids 0..K-1; None without one."""
    if label_dict is None:
        return None
    if not isinstance(label_dict, dict) or sorted(label_dict.values()) != list(range(len(label_dict))):
        raise WeightsFormatError(f"{source}: label_dict = {label_dict!r}: must map each class name to an id 0..K-1")
    return [name for name, _ in sorted(label_dict.items(), key=lambda item: item[1])]
