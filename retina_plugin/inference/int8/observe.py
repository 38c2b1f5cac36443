"""
Calibration: the float32 model run on calibration images records the range [min, max] of
every activation that the int8 model quantizes.
"""
import logging
from typing import Dict, Iterable, List

import torch
from torch import nn
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock

from .activations import Int8Error, Ranges

logger = logging.getLogger(__name__)




def _calibration_points(model: nn.Module):
    """(key, module, "input" | "output") for every range that quantize_int8 reads."""
    points = [(f"{name}:in", m, "input") for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name, m in model.named_modules():
        if isinstance(m, (BasicStem, BasicBlock, BottleneckBlock)):
            points.append((f"{name}:out", m, "output"))
            if getattr(m, "shortcut", None) is not None:
                points.append((f"{name}.shortcut:out", m.shortcut, "output"))
    return points


@torch.no_grad()
def calibrate_int8(model: nn.Module, batches: Iterable[List[Dict]]) -> Ranges:
    """
    Run the float32 model (eval mode) on `batches` of Detectron2 model inputs ("image" (C, H, W),
    C = len(MODEL.PIXEL_MEAN)) and return the range [min, max] of every activation that int8
    inference quantizes, keyed by module name.
    """
    if model.training:
        raise Int8Error("calibrate_int8 needs the model in eval mode (model.eval())")
    if getattr(model, "int8", False):
        raise Int8Error("calibrate_int8 needs the float32 model; this one is already int8")
    ranges: Dict[str, List[float]] = {}

    def record(key, tensor):
        low, high = tensor.min().item(), tensor.max().item()
        if key in ranges:
            low, high = min(low, ranges[key][0]), max(high, ranges[key][1])
        ranges[key] = [low, high]

    handles = []
    for key, module, where in _calibration_points(model):
        if where == "input":
            handles.append(module.register_forward_pre_hook(lambda m, args, key=key: record(key, args[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, key=key: record(key, out)))
    count = 0
    inference_dtype, model.inference_dtype = model.inference_dtype, "float32"
    try:
        for batch in batches:
            _check_channels(model, batch, count)
            model(batch)
            count += len(batch)
    finally:
        model.inference_dtype = inference_dtype
        for h in handles:
            h.remove()
    if count == 0:
        raise Int8Error("calibrate_int8 got no calibration images")
    logger.info(f"int8 calibration: {len(ranges)} activation ranges from {count} images")
    return {key: (low, high) for key, (low, high) in ranges.items()}


def _check_channels(model: nn.Module, batch: List[Dict], first_index: int) -> None:
    channels = model.pixel_mean.numel()
    for index, inputs in enumerate(batch, first_index):
        if inputs["image"].shape[0] != channels:
            raise Int8Error(
                f"calibration image {index} has {inputs['image'].shape[0]} channel(s), the model takes {channels} "
                "(len(MODEL.PIXEL_MEAN)): calibrate on images with the model's bands"
            )
