"""
Int8 inference on the CPU: post-training static quantization of the backbone and head.

Weights are int8, symmetric, one scale per output channel; activations are uint8 with one
scale and zero point per tensor, from ranges recorded on calibration images
(`calibrate_int8`). The convolutions are oneDNN's int8 kernels (VNNI on x86), with ReLU and
the ResNet's residual sum and the FPN's top-down sum fused into them; activations stay uint8
from the stem through the FPN to the outputs that only the head reads (P3-P5; the backbone
returns them as QuantizedActivation), and inside the head's subnets. P6/P7 and the head's
outputs are float32, and decoding and NMS are those of the float32 model.

    ranges = calibrate_int8(model, batches)          # float32 model, eval mode, weights loaded
    save_int8_calibration("int8_calibration.json", ranges)
    quantize_int8(model, load_int8_calibration("int8_calibration.json"))   # in place

`MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8` with `INT8_CALIBRATION <file>` does the last line in
RetinaPredictor (demo) and in `train_net.py --eval-only`; `tools/calibrate_int8.py` writes the
file and reports the AP cost.
"""
import hashlib
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock

from ..modeling.backbone import fold_batchnorm
from ..modeling.head import FocalLossHead

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT = "retina_plugin int8 calibration"

Ranges = Dict[str, Tuple[float, float]]


class Int8Error(ValueError):
    """A model or calibration file that int8 inference cannot use; the message says which part."""


class QuantizedActivation(NamedTuple):
    """
    An activation between int8 convolutions: `data` is uint8 (N, C, H, W) in channels_last,
    standing for scale * (data - zero_point).
    """

    data: torch.Tensor
    scale: float
    zero_point: int

    @property
    def shape(self):
        return self.data.shape

    @property
    def device(self):
        return self.data.device

    def dequantize(self) -> torch.Tensor:
        return (self.data.float() - self.zero_point) * self.scale


class QParams(NamedTuple):
    scale: float
    zero_point: int


def activation_qparams(low: float, high: float) -> QParams:
    """uint8 scale and zero point covering [low, high] (widened to contain 0, so 0 is exact)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = max(high - low, 1e-8) / 255.0
    return QParams(scale, int(min(max(round(-low / scale), 0), 255)))


def quantize_activation(x: torch.Tensor, qparams: QParams) -> QuantizedActivation:
    """float (N, C, H, W) -> QuantizedActivation: clamp(round(x / scale) + zero_point, 0, 255)."""
    x = x.float().contiguous(memory_format=torch.channels_last)
    data = x.mul(1.0 / qparams.scale).round_().add_(qparams.zero_point).clamp_(0, 255).to(torch.uint8)
    return QuantizedActivation(data, qparams.scale, qparams.zero_point)


def _folded_weight_and_bias(conv: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """The float weight and bias of `conv` with its norm (FrozenBatchNorm2d, or BatchNorm in eval) folded in."""
    weight = conv.weight.detach().float()
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(weight.shape[0])
    norm = getattr(conv, "norm", None)
    if norm is None:
        return weight, bias
    if not _foldable(norm):
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


# ---------------------------------------------------------------------------------------------
# Calibration


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


def apply_int8_config(cfg, model: nn.Module) -> nn.Module:
    """
    `model` made int8 in place with the ranges of cfg.MODEL.RETINA_PLUGIN.INT8_CALIBRATION when
    cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE is "int8"; `model` unchanged otherwise. Call it
    after the weights are loaded.
    """
    node = cfg.MODEL.RETINA_PLUGIN
    if node.INFERENCE_DTYPE != "int8":
        return model
    ranges = load_int8_calibration(node.INT8_CALIBRATION, model)
    return quantize_int8(model, ranges, source=node.INT8_CALIBRATION)


def _finite(v) -> bool:
    return v == v and abs(v) != float("inf")


# ---------------------------------------------------------------------------------------------
# Conversion


class _RangeLookup:
    def __init__(self, ranges: Ranges, source: str):
        self.ranges, self.source = ranges, source

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
        if isinstance(m, nn.Conv2d) and norm is not None and not _foldable(norm):
            raise Int8Error(
                f"int8 inference folds FrozenBatchNorm2d or BatchNorm into the convolution before it; backbone.{name} "
                f"has {type(norm).__name__} (MODEL.RESNETS.NORM / MODEL.FPN.NORM)"
            )


def _foldable(norm: nn.Module) -> bool:
    return isinstance(norm, (FrozenBatchNorm2d, _BatchNorm)) and getattr(norm, "running_mean", None) is not None


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
    qp = _RangeLookup(ranges, source)
    names = {m: name for name, m in model.named_modules()}
    backbone = model.backbone
    resnet = backbone.bottom_up

    # Bottom-up: uint8 from the stem's output to the last block's.
    stem = resnet.stem
    if type(stem) is not BasicStem:
        raise Int8Error(f"int8 inference supports Detectron2's BasicStem, not {type(stem).__name__}")
    stem.conv1 = Int8Conv2d(stem.conv1, qp(f"{names[stem.conv1]}:in"), relu=True, output_qparams=qp(f"{names[stem]}:out"))
    stem.__class__ = Int8BasicStem
    current = qp(f"{names[stem]}:out")
    stage_outputs = {}
    for stage_name, stage in zip(resnet.stage_names, resnet.stages):
        for index, block in enumerate(stage):
            current = _quantize_block(block, current, qp, names)
            # Past a stage's first block, a block's input is the block before's output, which
            # nothing else reads: an identity shortcut's sum can overwrite it (no copy).
            block.sum_into_input = index > 0
        stage_outputs[stage_name] = current

    # FPN: lateral convs read the stages' uint8 outputs and add the top-down path in uint8
    # (Int8FPN). An output conv whose level only the head reads hands it uint8 (one rounding
    # in the kernel, instead of a float32 map quantized again by each subnet).
    head = model.head
    head_input = _head_input_qparams(head, qp, names)
    for index, (lateral, output) in enumerate(zip(backbone.lateral_convs, backbone.output_convs)):
        feature = backbone.in_features[-1 - index]
        level = backbone._out_features[len(backbone.in_features) - 1 - index]
        only_head = head_input is not None and level in model.head_in_features and level != backbone.top_block.in_feature
        lateral_sum = qp(f"{names[output]}:in")
        _replace(backbone, lateral, Int8Conv2d(lateral, stage_outputs[feature], output_qparams=lateral_sum))
        _replace(backbone, output, Int8Conv2d(output, lateral_sum, output_qparams=head_input if only_head else None))
    backbone.__class__ = Int8FPN
    top = backbone.top_block
    p6_input = stage_outputs.get(top.in_feature) or qp(f"{names[top.p6]}:in")
    top.p6 = Int8Conv2d(top.p6, p6_input)
    top.p7 = Int8Conv2d(top.p7, qp(f"{names[top.p7]}:in"))

    # Head: a conv followed by a ReLU runs it fused and hands the next conv uint8; one followed
    # by a norm (GN, per-level BN) outputs float32 for it. The predictors output float32.
    shared = {"packed_shapes": 2 * len(model.head_in_features)}  # the head runs on every level
    for subnet, predictor in ((head.cls_subnet, head.cls_score), (head.bbox_subnet, head.bbox_pred)):
        layers = list(subnet)
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Conv2d):
                continue
            following = layers[i + 1 : i + 3]
            if following and isinstance(following[0], nn.ReLU):
                consumer = following[1] if len(following) == 2 else predictor
                out = qp(f"{names[consumer]}:in")
                subnet[i] = Int8Conv2d(layer, qp(f"{names[layer]}:in"), relu=True, output_qparams=out, **shared)
                subnet[i + 1] = nn.Identity()
            else:
                subnet[i] = Int8Conv2d(layer, qp(f"{names[layer]}:in"), **shared)
    head.cls_score = Int8Conv2d(head.cls_score, qp(f"{names[head.cls_score]}:in"), **shared)
    head.bbox_pred = Int8Conv2d(head.bbox_pred, qp(f"{names[head.bbox_pred]}:in"), **shared)
    model.eval()
    model.int8 = True
    logger.info(f"int8 inference: {sum(isinstance(m, Int8Conv2d) for m in model.modules())} convolutions quantized ({source})")
    return model


def _head_input_qparams(head: FocalLossHead, qp: _RangeLookup, names) -> Optional[QParams]:
    """
    The QParams both of the head's branches quantize a level with, or None where they differ.
    Calibration records both on the same maps, so they are equal unless a file was edited.
    """
    first = [[*head.cls_subnet, head.cls_score][0], [*head.bbox_subnet, head.bbox_pred][0]]
    cls_input, box_input = (qp(f"{names[m]}:in") for m in first)
    return cls_input if cls_input == box_input else None


def _quantize_block(block: nn.Module, input_qparams: QParams, qp: _RangeLookup, names) -> QParams:
    """Make a ResNet block int8 in place; returns its output's QParams."""
    name = names[block]
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
