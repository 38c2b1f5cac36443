"""
Conversion: a float32 RetinaNetPlugin made int8 in place, in three phases (the ResNet, the
FPN with P6/P7, the head), each convolution an `Int8Conv2d` with the ranges of its calibration.
"""
import logging
from typing import Dict, Optional

import torch
from torch import nn
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock

from ...modeling.head import FocalLossHead
from .activations import Int8Error, QParams, Ranges, activation_qparams
from .layers import Int8BasicBlock, Int8BasicStem, Int8BottleneckBlock, Int8Conv2d, Int8FPN, foldable

logger = logging.getLogger(__name__)


class _RangeLookup:
    """The QParams of a module's calibrated input or output range, by the module's name in the model."""

    def __init__(self, ranges: Ranges, source: str, names: Dict[nn.Module, str]):
        self.ranges, self.source, self.names = ranges, source, names

    def input(self, module: nn.Module) -> QParams:
        return self(f"{self.names[module]}:in")

    def output(self, module: nn.Module) -> QParams:
        return self(f"{self.names[module]}:out")

    def __call__(self, key: str) -> QParams:
        if key not in self.ranges:
            raise Int8Error(
                f"int8 calibration {self.source} has no range for {key!r}: it was made for another model "
                "(architecture or depth); calibrate this one with tools/calibrate_int8.py"
            )
        return activation_qparams(*self.ranges[key])


def _check_supported(model: nn.Module) -> None:
    backbone = getattr(model, "backbone", None)
    head = getattr(model, "head", None)
    parts = [
        (isinstance(backbone, FPN), "the backbone is not Detectron2's FPN"),
        (isinstance(getattr(backbone, "bottom_up", None), ResNet), "the FPN's bottom-up is not a ResNet"),
        (isinstance(getattr(backbone, "top_block", None), LastLevelP6P7), "the FPN's top block is not LastLevelP6P7"),
        (type(head) is FocalLossHead, "the head is not FocalLossHead"),
    ]
    for ok, why in parts:
        if not ok:
            raise Int8Error(f"int8 inference supports ResNet-FPN with LastLevelP6P7 and FocalLossHead: {why}")
    if backbone._fuse_type != "sum":
        raise Int8Error("int8 inference needs MODEL.FPN.FUSE_TYPE sum")
    for name, m in backbone.named_modules():
        norm = getattr(m, "norm", None)
        if isinstance(m, nn.Conv2d) and norm is not None and not foldable(norm):
            raise Int8Error(
                f"int8 inference folds FrozenBatchNorm2d or BatchNorm into the convolution before it; backbone.{name} "
                f"has {type(norm).__name__} (MODEL.RESNETS.NORM / MODEL.FPN.NORM)"
            )



@torch.no_grad()
def quantize_int8(model: nn.Module, ranges: Ranges, source: str = "(ranges)") -> nn.Module:
    """
    Make a float32 RetinaNetPlugin (weights loaded, on the CPU) an int8 one, in place: every
    convolution of the ResNet, FPN, P6/P7 and head becomes an Int8Conv2d using `ranges` from
    `calibrate_int8` on this model. The model is inference-only afterwards. Returns `model`.
    """
    _check_supported(model)
    if model.pixel_mean.device.type != "cpu":
        raise Int8Error(f"int8 inference runs on the CPU (oneDNN), the model is on {model.pixel_mean.device}")
    qp = _RangeLookup(ranges, source, {m: name for name, m in model.named_modules()})
    stage_outputs = quantize_resnet(model.backbone.bottom_up, qp)
    quantize_fpn(model, stage_outputs, qp)
    quantize_head(model.head, len(model.head_in_features), qp)
    model.eval()
    model.int8 = True
    logger.info(f"int8 inference: {sum(isinstance(m, Int8Conv2d) for m in model.modules())} convolutions quantized ({source})")
    return model


def quantize_resnet(resnet: ResNet, qp: "_RangeLookup") -> Dict[str, QParams]:
    """The bottom-up path in uint8 from the stem's output to the last block's; returns each stage's output QParams."""
    stem = resnet.stem
    if type(stem) is not BasicStem:
        raise Int8Error(f"int8 inference supports Detectron2's BasicStem, not {type(stem).__name__}")
    stem.conv1 = Int8Conv2d(stem.conv1, qp.input(stem.conv1), relu=True, output_qparams=qp.output(stem))
    stem.__class__ = Int8BasicStem
    current = qp.output(stem)
    stage_outputs = {}
    for stage_name, stage in zip(resnet.stage_names, resnet.stages):
        for index, block in enumerate(stage):
            current = _quantize_block(block, current, qp)
            # Past a stage's first block, a block's input is the block before's output, which
            # nothing else reads: an identity shortcut's sum can overwrite it (no copy).
            block.sum_into_input = index > 0
        stage_outputs[stage_name] = current
    return stage_outputs


def quantize_fpn(model: nn.Module, stage_outputs: Dict[str, QParams], qp: "_RangeLookup") -> None:
    """
    The FPN and P6/P7: lateral convs read the stages' uint8 outputs and add the top-down path in
    uint8 (Int8FPN). An output conv whose level only the head reads hands it uint8 (one rounding
    in the kernel, instead of a float32 map quantized again by each subnet).
    """
    backbone = model.backbone
    head_input = _head_input_qparams(model.head, qp)
    for index, (lateral, output) in enumerate(zip(backbone.lateral_convs, backbone.output_convs)):
        feature = backbone.in_features[-1 - index]
        level = backbone._out_features[len(backbone.in_features) - 1 - index]
        only_head = head_input is not None and level in model.head_in_features and level != backbone.top_block.in_feature
        lateral_sum = qp.input(output)
        _replace(backbone, lateral, Int8Conv2d(lateral, stage_outputs[feature], output_qparams=lateral_sum))
        _replace(backbone, output, Int8Conv2d(output, lateral_sum, output_qparams=head_input if only_head else None))
    backbone.__class__ = Int8FPN
    top = backbone.top_block
    p6_input = stage_outputs.get(top.in_feature) or qp.input(top.p6)
    top.p6 = Int8Conv2d(top.p6, p6_input)
    top.p7 = Int8Conv2d(top.p7, qp.input(top.p7))


def quantize_head(head: FocalLossHead, num_levels: int, qp: "_RangeLookup") -> None:
    """
    The head's subnets and predictors: a conv followed by a ReLU runs it fused and hands the
    next conv uint8; one followed by a norm (GN, per-level BN) outputs float32 for it. The
    predictors output float32.
    """
    shared = {"packed_shapes": 2 * num_levels}  # the head runs on every level
    for subnet, predictor in ((head.cls_subnet, head.cls_score), (head.bbox_subnet, head.bbox_pred)):
        layers = list(subnet)
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Conv2d):
                continue
            following = layers[i + 1 : i + 3]
            if following and isinstance(following[0], nn.ReLU):
                consumer = following[1] if len(following) == 2 else predictor
                subnet[i] = Int8Conv2d(layer, qp.input(layer), relu=True, output_qparams=qp.input(consumer), **shared)
                subnet[i + 1] = nn.Identity()
            else:
                subnet[i] = Int8Conv2d(layer, qp.input(layer), **shared)
    head.cls_score = Int8Conv2d(head.cls_score, qp.input(head.cls_score), **shared)
    head.bbox_pred = Int8Conv2d(head.bbox_pred, qp.input(head.bbox_pred), **shared)


def _head_input_qparams(head: FocalLossHead, qp: _RangeLookup) -> Optional[QParams]:
    """
    The QParams both of the head's branches quantize a level with, or None where they differ.
    Calibration records both on the same maps, so they are equal unless a file was edited.
    """
    first = [[*head.cls_subnet, head.cls_score][0], [*head.bbox_subnet, head.bbox_pred][0]]
    cls_input, box_input = (qp.input(m) for m in first)
    return cls_input if cls_input == box_input else None


def _quantize_block(block: nn.Module, input_qparams: QParams, qp: _RangeLookup) -> QParams:
    """Make a ResNet block int8 in place; returns its output's QParams."""
    name = qp.names[block]
    output = qp(f"{name}:out")
    if block.shortcut is not None:
        block.shortcut = Int8Conv2d(block.shortcut, input_qparams, output_qparams=qp(f"{name}.shortcut:out"))
    if type(block) is BottleneckBlock:
        block.conv1 = Int8Conv2d(block.conv1, input_qparams, relu=True, output_qparams=qp(f"{name}.conv2:in"))
        block.conv2 = Int8Conv2d(block.conv2, qp(f"{name}.conv2:in"), relu=True, output_qparams=qp(f"{name}.conv3:in"))
        block.conv3 = Int8Conv2d(block.conv3, qp(f"{name}.conv3:in"), relu=True, output_qparams=output)
        block.__class__ = Int8BottleneckBlock
    elif type(block) is BasicBlock:
        block.conv1 = Int8Conv2d(block.conv1, input_qparams, relu=True, output_qparams=qp(f"{name}.conv2:in"))
        block.conv2 = Int8Conv2d(block.conv2, qp(f"{name}.conv2:in"), relu=True, output_qparams=output)
        block.__class__ = Int8BasicBlock
    else:
        raise Int8Error(f"int8 inference supports BasicBlock and BottleneckBlock, not {name} ({type(block).__name__})")
    return output


def _replace(parent: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put `new` wherever `old` is a direct child of `parent` (FPN registers its convs twice)."""
    for name, child in list(parent.named_children()):
        if child is old:
            setattr(parent, name, new)
    for module_list in (parent.lateral_convs, parent.output_convs):
        for i, child in enumerate(module_list):
            if child is old:
                module_list[i] = new
