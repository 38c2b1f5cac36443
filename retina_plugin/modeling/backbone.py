"""ResNet-FPN backbone with the P3-P7 pyramid of RetinaNet (paper section 4)."""
import torch
import torch.nn as nn
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from . import winograd
from .winograd import InferenceConv2d

# MODEL.RETINA_PLUGIN.P6_SOURCE: the input of the P6 conv, C5 (the paper, Detectron2, torchvision v2) or P5 (FCOS, torchvision v1).
P6_SOURCES = ("res5", "p5")


class FrozenBNFoldedConv2d(InferenceConv2d):
    """
    Detectron2's Conv2d followed by its FrozenBatchNorm2d, computed at inference as one
    convolution with the norm folded into the weights: w' = w * s, b' = beta - mean * s (+ b * s),
    s = gamma / sqrt(var + eps). That saves a pass over every activation of the ResNet. The
    folded weights are made per call, one layer at a time, so no second copy of the weights is
    kept; parameters, buffers and state_dict are those of Detectron2's Conv2d. In training, or
    with autograd on, it is Detectron2's Conv2d.
    """

    def forward(self, x):
        if self.training or torch.is_grad_enabled():
            return Conv2d.forward(self, x)
        weight, bias = fold_batchnorm(self.weight, self.bias, self.norm)
        x = winograd.conv2d(x, weight, bias.to(x.dtype), self.stride, self.padding, self.dilation, self.groups, self.winograd)
        return x if self.activation is None else self.activation(x)


def fold_batchnorm(weight: torch.Tensor, bias, norm: nn.Module):
    """
    The weight and bias of one convolution equal to conv(weight, bias) followed by `norm`, a
    FrozenBatchNorm2d or a BatchNorm with running statistics used as in eval mode:
    weight * s, beta - mean * s (+ bias * s), s = gamma / sqrt(var + eps), per output channel.
    Args: weight (Cout, Cin, kh, kw); bias (Cout,) or None. Returns (weight, bias (Cout,)).
    """
    scale = (norm.running_var + norm.eps).rsqrt()
    if norm.weight is not None:
        scale = norm.weight * scale
    folded_bias = -norm.running_mean * scale
    if norm.bias is not None:
        folded_bias = folded_bias + norm.bias
    if bias is not None:
        folded_bias = folded_bias + bias * scale
    return weight * scale.view(-1, 1, 1, 1).to(weight.dtype), folded_bias


def fold_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Make every Detectron2 Conv2d with a FrozenBatchNorm2d norm in `module` a FrozenBNFoldedConv2d."""
    for m in module.modules():
        if type(m) is Conv2d and isinstance(m.norm, FrozenBatchNorm2d):
            m.__class__ = FrozenBNFoldedConv2d
    return module


@BACKBONE_REGISTRY.register()
def build_retina_plugin_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    Detectron2's `build_retinanet_resnet_fpn_backbone` (ResNet of cfg.MODEL.RESNETS, FPN of
    cfg.MODEL.FPN, Detectron2's LastLevelP6P7: P6 = 3x3/2 conv, P7 = 3x3/2 conv on ReLU(P6)),
    with P6 taken from cfg.MODEL.RETINA_PLUGIN.P6_SOURCE ("res5" = C5 as in the paper and
    Detectron2, or "p5") and the ResNet's FrozenBatchNorm folded into its convolutions at
    inference (same state_dict and outputs, one pass less over every activation).

    Returns a Backbone whose outputs are {"p3": (N, 256, H/8, W/8), ..., "p7": (N, 256, H/128, W/128)}.
    """
    bottom_up = fold_frozen_batchnorm(build_resnet_backbone(cfg, input_shape))
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    p6_source = cfg.MODEL.RETINA_PLUGIN.P6_SOURCE
    if p6_source not in P6_SOURCES:
        raise ValueError(f"cfg.MODEL.RETINA_PLUGIN.P6_SOURCE = {p6_source!r}: must be one of {P6_SOURCES}")
    if p6_source == "res5":
        p6_in_channels = bottom_up.output_shape()["res5"].channels
    else:
        p6_in_channels = out_channels
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(p6_in_channels, out_channels, in_feature=p6_source),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
