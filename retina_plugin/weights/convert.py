"""
Converting RetinaNet weights between torchvision / DeepForest and RetinaNetPlugin, both ways
(tools/convert_weights.py; docs/weights.md): the weights renamed and their anchors reordered
(`torchvision_keys`), the config that runs them as their source did (`torchvision_config`),
the class names carried along.
"""
import json
import os
from typing import List, Optional, Sequence

import torch
from detectron2.modeling import build_model

from ..config import load_config
from .checkpoint import RetinaCheckpointer
from .source_files import SourceWeights, read_deepforest, read_state_dict, read_torch_file
from .torchvision_config import DEEPFOREST_KEYS, TORCHVISION_ANCHOR_SIZES, TORCHVISION_ASPECT_RATIOS, converted_config, torchvision_variant
from .torchvision_keys import WeightsFormatError, plugin_to_torchvision, torchvision_to_plugin

NUM_SIZES, NUM_RATIOS = len(TORCHVISION_ANCHOR_SIZES[0]), len(TORCHVISION_ASPECT_RATIOS[0])
CHECKPOINT_NAME, CONFIG_NAME = "model_final", "config.yaml"


def coco_category_names() -> List[str]:
    """torchvision's 91 COCO label names ("__background__" and "N/A" for the unused ids); no download."""
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

    return list(RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def read_source(source: str, path: str) -> SourceWeights:
    """The weights (and DeepForest's class names and test settings) of a source model file or folder."""
    if source == "deepforest":
        return read_deepforest(path)
    if os.path.isdir(path):
        raise WeightsFormatError(f"{path}: a folder; --from {source} takes a .pth or .safetensors file")
    return SourceWeights(read_state_dict(path), path)


def convert_to_plugin(source: str, path: str, output_dir: str, class_names: Optional[Sequence[str]] = None, opts=()) -> str:
    """
    Write `output_dir`/model_final.pth (a RetinaCheckpointer checkpoint with "class_names") and
    `output_dir`/config.yaml (whole; MODEL.WEIGHTS is that checkpoint) for a torchvision
    ("torchvision", "torchvision-v2") or DeepForest ("deepforest") RetinaNet at `path`; `opts`
    (KEY VALUE) go last into the config. Returns the config's path.
    """
    weights = read_source(source, path)
    head_norm = source == "torchvision-v2"
    state = torchvision_to_plugin(weights.state, NUM_SIZES, NUM_RATIOS, head_norm, f"{weights.path}: not a {source} RetinaNet")
    if "head.cls_score.bias" not in state:
        raise WeightsFormatError(f"{weights.path}: not a {source} RetinaNet: missing key 'head.classification_head.cls_logits.bias'")
    num_classes = state["head.cls_score.bias"].numel() // (NUM_SIZES * NUM_RATIOS)
    names = _class_names(source, weights, num_classes, class_names)
    output_dir = os.path.abspath(output_dir)
    extra = {DEEPFOREST_KEYS[k]: v for k, v in weights.settings.items()}
    cfg = converted_config(source, num_classes, os.path.join(output_dir, CHECKPOINT_NAME + ".pth"), extra, opts)
    cpu_cfg = cfg.clone()
    cpu_cfg.MODEL.DEVICE = "cpu"  # the written config keeps Detectron2's device
    model = build_model(cpu_cfg)
    _check_keys(state, model.state_dict(), weights.path, source, head_norm)
    model.load_state_dict(state, strict=True)
    RetinaCheckpointer(model, save_dir=output_dir, class_names=names).save(CHECKPOINT_NAME)
    config_path = os.path.join(output_dir, CONFIG_NAME)
    header = f"# {source} RetinaNet converted from {os.path.abspath(weights.path)} by tools/convert_weights.py.\n"
    header += f"# Classes ({num_classes}; also in {CHECKPOINT_NAME}.pth): {', '.join(names) if names else 'not named'}\n"
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(header + cfg.dump())
    load_config(config_path)  # the file a user gets loads as every tool loads it
    return config_path


def _class_names(source, weights: SourceWeights, num_classes: int, given) -> Optional[List[str]]:
    names = list(given) if given else weights.class_names
    if names is None and source != "deepforest" and num_classes == 91:
        names = coco_category_names()
    if names is not None and len(names) != num_classes:
        origin = "--class-names" if given else weights.path
        raise WeightsFormatError(f"{origin}: {len(names)} class names {names[:5]} for a model of {num_classes} classes")
    return names


def _check_keys(state, expected, path: str, source: str, head_norm: bool) -> None:
    """The first key the model lacks or the file lacks, or the first shape that differs, by its torchvision name."""
    def torchvision_name(key):
        return next(iter(plugin_to_torchvision({key: state.get(key, expected.get(key))}, 1, 1, head_norm, path)))

    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    if unexpected:
        raise WeightsFormatError(f"{path}: not a {source} RetinaNet: unexpected key {torchvision_name(unexpected[0])!r}")
    if missing:
        raise WeightsFormatError(f"{path}: not a {source} RetinaNet: missing key {torchvision_name(missing[0])!r}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise WeightsFormatError(
                f"{path}: not a {source} RetinaNet: {torchvision_name(key)!r} has shape {list(value.shape)}, "
                f"the model {list(expected[key].shape)}"
            )


def convert_to_torchvision(config_file: str, weights: str, output: str, to: str = "torchvision", opts=()) -> str:
    """
    The way back: a RetinaNetPlugin checkpoint `weights` of the config `config_file` (a
    torchvision-compatible one, as convert_to_plugin writes) as torchvision's state_dict, in
    `output` (a .pth that `retinanet_resnet50_fpn(_v2)(weights=None, num_classes=K)` loads
    strictly), or, `to` "deepforest", a folder with model.safetensors + config.json as DeepForest
    writes them. Returns what was written.
    """
    cfg = load_config(config_file, opts)
    variant = torchvision_variant(cfg)
    if to == "deepforest" and variant != "torchvision":
        raise WeightsFormatError(f"{config_file}: DeepForest's RetinaNet is torchvision's v1; this config is {variant}")
    checkpoint = read_torch_file(weights)
    if not isinstance(checkpoint.get("model"), dict):
        raise WeightsFormatError(f"{weights}: not a RetinaNetPlugin checkpoint: no 'model' state_dict")
    head_norm = variant == "torchvision-v2"
    state = plugin_to_torchvision(checkpoint["model"], NUM_SIZES, NUM_RATIOS, head_norm, f"{weights}: not a RetinaNetPlugin checkpoint")
    _load_into_torchvision(state, variant, cfg.MODEL.RETINANET.NUM_CLASSES, weights)
    if to == "torchvision":
        torch.save(state, output)
        return output
    return _write_deepforest(state, cfg, checkpoint.get("class_names"), output)


def _load_into_torchvision(state, variant: str, num_classes: int, source: str) -> None:
    """Load `state` strictly into torchvision's model: what torchvision would refuse is refused here, naming the key."""
    from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

    build = retinanet_resnet50_fpn_v2 if variant == "torchvision-v2" else retinanet_resnet50_fpn
    model = build(weights=None, weights_backbone=None, num_classes=num_classes)
    expected = model.state_dict()
    for key in expected:
        if key not in state:
            raise WeightsFormatError(f"{source}: torchvision's {variant} RetinaNet needs {key!r}, which these weights lack")
        if state[key].shape != expected[key].shape:
            raise WeightsFormatError(f"{source}: {key!r} has shape {list(state[key].shape)}; torchvision's {list(expected[key].shape)}")
    model.load_state_dict(state, strict=True)


def _write_deepforest(state, cfg, class_names, folder: str) -> str:
    """DeepForest 2.x's Hugging Face folder: model.safetensors + config.json (num_classes, label_dict, thresholds)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    names = class_names or [f"class_{i}" for i in range(num_classes)]
    config = {"num_classes": num_classes, "label_dict": {name: i for i, name in enumerate(names)}}
    for name, key in DEEPFOREST_KEYS.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        config[name] = node
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return folder
