"""
The int8 layers: a float convolution (norm folded in) as one oneDNN int8 convolution
(`Int8Conv2d`, with ReLU and a residual or top-down sum inside the kernel), and Detectron2's
stem, ResNet blocks and FPN running on uint8 activations between them.
"""
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock

from ...modeling.backbone import fold_batchnorm
from .activations import Int8Error, QParams, QuantizedActivation, quantize_activation


def _folded_weight_and_bias(conv: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """The float weight and bias of `conv` with its norm (FrozenBatchNorm2d, or BatchNorm in eval) folded in."""
    weight = conv.weight.detach().float()
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(weight.shape[0])
    norm = getattr(conv, "norm", None)
    if norm is None:
        return weight, bias
    if not foldable(norm):
        raise Int8Error(f"int8 inference folds only FrozenBatchNorm2d or BatchNorm with running statistics, not {norm}")
    return fold_batchnorm(weight, bias, norm)


class Int8Conv2d(nn.Module):
    """
    A float convolution (with its BatchNorm folded) as one oneDNN int8 convolution.

    Input: float (N, C, H, W), quantized with `input_qparams`, or a QuantizedActivation with
    those parameters. Output: float32, or a QuantizedActivation with `output_qparams`. ReLU and
    a residual sum (`accumulate`) are applied inside the kernel, before the output rounding.
    Inference only: it has no float weights to train.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        input_qparams: QParams,
        relu: bool = False,
        output_qparams: Optional[QParams] = None,
        packed_shapes: int = 4,
    ):
        super().__init__()
        activation = getattr(conv, "activation", None)
        if activation is not None:
            raise Int8Error(f"a convolution with activation {activation} cannot be made int8")
        weight, bias = _folded_weight_and_bias(conv)
        weight_scale = (weight.abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-12)
        # Buffers (moved by .to(), listed by .buffers()) but not in the state_dict: checkpoints
        # hold the float weights, and an int8 model is made from them.
        self.register_buffer("weight_scale", weight_scale, persistent=False)
        qweight = (weight / weight_scale.view(-1, 1, 1, 1)).round().clamp(-128, 127).to(torch.int8)
        self.register_buffer("qweight", qweight, persistent=False)
        self.register_buffer("weight_zero_point", torch.zeros(weight.shape[0], dtype=torch.int64), persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        # oneDNN picks the int8 weight layout for one input shape; any other shape reorders the
        # weights on every call (up to 25x slower for the 1x1 convs of res4/res5). So the packed
        # weights are kept per input shape, the `packed_shapes` most recently used.
        self.packed_shapes = packed_shapes
        self._packed: "OrderedDict[Tuple[int, ...], torch.Tensor]" = OrderedDict()
        self.input_qparams = input_qparams
        self.output_qparams = output_qparams
        self.unary = "relu" if relu else "none"
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size

    def _packed_for(self, shape: torch.Size) -> torch.Tensor:
        key = tuple(shape)
        packed = self._packed.get(key)
        if packed is None:
            packed = torch.ops.onednn.qconv_prepack(
                self.qweight, self.weight_scale, self.input_qparams.scale, self.input_qparams.zero_point,
                self.stride, self.padding, self.dilation, self.groups, list(key),
            )
            self._packed[key] = packed
            if len(self._packed) > self.packed_shapes:
                self._packed.popitem(last=False)
        else:
            self._packed.move_to_end(key)
        return packed

    def extra_repr(self):
        out = "float32" if self.output_qparams is None else f"uint8 {self.output_qparams}"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={tuple(self.stride)}, "
            f"{self.unary}, input {self.input_qparams}, output {out}"
        )

    def forward(self, x, accumulate: Optional[QuantizedActivation] = None):
        """
        Args:
            x: float (N, C, H, W) or QuantizedActivation.
            accumulate: a QuantizedActivation of the output's shape added before the ReLU
                (its buffer is overwritten with the output).
        Returns:
            float32 (N, C', H', W') or QuantizedActivation.
        """
        if self.training:
            raise RuntimeError("Int8Conv2d is inference-only; train the float32 model and quantize it again")
        if not isinstance(x, QuantizedActivation):
            x = quantize_activation(x, self.input_qparams)
        out = self.output_qparams
        args = (x.data, x.scale, x.zero_point, self._packed_for(x.data.shape), self.weight_scale, self.weight_zero_point)
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        if accumulate is None:
            y = torch.ops.onednn.qconv2d_pointwise(
                *args, self.bias, *geometry,
                1.0 if out is None else out.scale, 0 if out is None else out.zero_point,
                torch.float32 if out is None else None, self.unary, [], "",
            )
        else:
            if out is None:
                raise Int8Error("a residual sum inside an int8 convolution needs uint8 output parameters")
            y = torch.ops.onednn.qconv2d_pointwise.binary(
                *args, accumulate.data, self.bias, *geometry, out.scale, out.zero_point, None,
                accumulate.scale, accumulate.zero_point, "sum", 1.0, self.unary, [], "",
            )
        return y if out is None else QuantizedActivation(y, out.scale, out.zero_point)


class Int8BasicStem(BasicStem):
    """Detectron2's BasicStem on int8: conv1+ReLU -> uint8, max-pool on uint8 (exact)."""

    def forward(self, x):
        x = self.conv1(x)
        return x._replace(data=_max_pool_3x3_s2(x.data))


def _max_pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
    """
    F.max_pool2d(x, 3, 2, 1) for uint8 (N, C, H, W) channels_last, as two separable passes of
    strided maxima. PyTorch's own uint8 max-pool rejects channels_last images this large and is
    ~20x slower in NCHW. Padding with 0 is exact: 0 is no larger than any uint8 value.
    """
    h, w = x.shape[-2:]
    ho, wo = (h + 1) // 2, (w + 1) // 2
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[:, :, 0 : 2 * ho : 2], p[:, :, 1 : 2 * ho + 1 : 2]), p[:, :, 2 : 2 * ho + 2 : 2])
    return torch.maximum(
        torch.maximum(rows[..., 0 : 2 * wo : 2], rows[..., 1 : 2 * wo + 1 : 2]), rows[..., 2 : 2 * wo + 2 : 2]
    )


class Int8BasicBlock(BasicBlock):
    """Detectron2's BasicBlock on QuantizedActivations; the sum and last ReLU run inside conv2."""

    def forward(self, x: QuantizedActivation) -> QuantizedActivation:
        out = self.conv1(x)
        return self.conv2(out, accumulate=_shortcut(self, x))


class Int8BottleneckBlock(BottleneckBlock):
    """Detectron2's BottleneckBlock on QuantizedActivations; the sum and last ReLU run inside conv3."""

    def forward(self, x: QuantizedActivation) -> QuantizedActivation:
        out = self.conv2(self.conv1(x))
        return self.conv3(out, accumulate=_shortcut(self, x))


class Int8FPN(FPN):
    """
    Detectron2's FPN on QuantizedActivations: each lateral convolution adds the upsampled
    coarser sum inside its kernel and hands the output convolution that sum in uint8, where
    Detectron2's FPN makes both in float32 and sums them in passes of their own.
    """

    def forward(self, x):
        bottom_up_features = self.bottom_up(x)
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        for lateral_conv, output_conv, feature in zip(self.lateral_convs[1:], self.output_convs[1:], self.in_features[-2::-1]):
            # nearest 2x upsampling of uint8 is exact
            top_down = prev._replace(data=F.interpolate(prev.data, scale_factor=2.0, mode="nearest"))
            prev = lateral_conv(bottom_up_features[feature], accumulate=top_down)
            results.insert(0, output_conv(prev))
        if self.top_block.in_feature in bottom_up_features:
            top_block_input = bottom_up_features[self.top_block.in_feature]
        else:
            top_block_input = results[self._out_features.index(self.top_block.in_feature)]
        results.extend(self.top_block(top_block_input))
        return dict(zip(self._out_features, results))


def _shortcut(block, x: QuantizedActivation) -> QuantizedActivation:
    if block.shortcut is not None:
        return block.shortcut(x)
    if block.sum_into_input:
        return x
    # The summing convolution writes its output into this buffer; x may be read elsewhere.
    return x._replace(data=x.data.clone())


def foldable(norm: nn.Module) -> bool:
    """Whether int8 can fold `norm` into its convolution: FrozenBatchNorm2d, or BatchNorm with running statistics."""
    return isinstance(norm, (FrozenBatchNorm2d, _BatchNorm)) and getattr(norm, "running_mean", None) is not None
