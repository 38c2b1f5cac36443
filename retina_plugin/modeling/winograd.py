"""
Winograd F(4x4, 3x3) convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016) for float32 inference on the CPU.

A 3x3 stride-1 convolution computes each 4x4 output tile from a 6x6 input tile with
36 products per (input, output) channel pair instead of 144: Y = A^T [(G w G^T) * (B^T d B)] A.
The 36 elementwise products over channels are 36 matrix products (tiles x C) @ (C x K), which
oneDNN/MKL run faster than oneDNN's direct convolution runs the conv itself. Measured on the
2-core AVX-512 CPU this project benchmarks on (`benchmarks/winograd.py`): 1.2-2.5x on the
head's, the FPN's and the ResNet's 3x3 convolutions from 128 channels in, slower at 64.

Which shapes run as Winograd: with `MODEL.RETINA_PLUGIN.WINOGRAD "auto"` (the default), where
`applies` holds, direct or Winograd and the chunk size are measured per shape on the machine
itself, once, and cached (`winograd_tuning`); with True, the static rules below (measured on
that one CPU) decide.

The outputs differ from the direct convolution's by float rounding, a relative 1e-5 per
layer (the transform's constants 1/6 and 1/24 are not exact in float32); `MODEL.RETINA_PLUGIN.WINOGRAD
False` keeps the direct convolution everywhere.
"""
import functools
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from detectron2.layers import Conv2d

from . import winograd_tuning

# Lavin and Gray's F(4x4, 3x3) matrices: input transform B^T (6x6), filter transform G (6x3),
# output transform A^T (4x6).
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]  # fmt: skip
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]  # fmt: skip
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


def _kron(m):
    # The 2-D transform M X M^T of a row-major flattened tile X is kron(M, M) @ vec(X).
    m = torch.tensor(m, dtype=torch.float64)
    return torch.kron(m, m).float()


INPUT_TRANSFORM = _kron(_BT)  # (36, 36)
FILTER_TRANSFORM = _kron(_G)  # (36, 9)
OUTPUT_TRANSFORM = _kron(_AT)  # (16, 36)
# Below 128 input channels the input transform's memory traffic outweighs the saved products,
# and below 32 output channels so does the output's (measured: 64 -> 64 0.91x, 128 -> 128
# 1.6x, 256 -> 36 1.2x of the direct convolution).
MIN_IN_CHANNELS = 128
MIN_OUT_CHANNELS = 32
# Tiles per matrix product: the transformed tiles and products of one chunk stay in the cache
# (measured 1.3-1.5x faster at P3 than one product over the whole map). Above 256 output
# channels, proportionally fewer (the class predictor's 720 on P3: 88 ms against 99).
TILES_PER_CHUNK = 256
# A convolution whose filters are transformed for one call (the ResNet's and FPN's, folded
# per call) pays the transform, 36 K C values, once per map. Measured, it pays off from about
# this many output pixels (FPN output on P5, 25x38, 1.5x faster with its transform)...
MIN_PIXELS_PER_TRANSFORM = 512
# ...while its transformed filters fit below glibc's largest mmap threshold (32 MiB): larger
# ones are new pages on every call, and writing them costs more than the products save
# (res5, 512 -> 512: 15 ms against 1 ms for 256 -> 256; 0.72x of direct with it).
MAX_BYTES_PER_TRANSFORM = 32 * 2**20


def applies(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups) -> bool:
    """
    Whether `winograd_conv2d` replaces F.conv2d(x, weight, ...): a 3x3 kernel, stride 1,
    padding 1, no dilation or groups, >= MIN_IN_CHANNELS in and >= MIN_OUT_CHANNELS out, float32
    on the CPU, and not inside a trace (export and FLOP counts keep the convolution) or
    torch.compile.
    """
    return (
        plain_cpu_float32(x)
        and weight.dtype == torch.float32
        and weight.shape[-2:] == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
        and weight.shape[1] >= MIN_IN_CHANNELS
        and weight.shape[0] >= MIN_OUT_CHANNELS
    )


def pays_per_call(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether Winograd with its filters transformed for this one call beats the direct convolution."""
    transformed_bytes = 36 * weight.shape[0] * weight.shape[1] * weight.element_size()
    return x.shape[-2] * x.shape[-1] >= MIN_PIXELS_PER_TRANSFORM and transformed_bytes <= MAX_BYTES_PER_TRANSFORM


def plain_cpu_float32(x: torch.Tensor) -> bool:
    """`x` is float32 on the CPU, outside autocast, a trace, TorchScript and torch.compile."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def transform_filter(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) filters -> (36, C, K): G w G^T of each, flattened, in the layout of the products' right side."""
    k, c = weight.shape[:2]
    return torch.mm(FILTER_TRANSFORM, weight.permute(1, 0, 2, 3).reshape(c * k, 9).t()).view(36, c, k)


def winograd_conv2d(
    x: torch.Tensor, filters: torch.Tensor, bias=None, relu: bool = False, tiles_per_chunk: Optional[int] = None
) -> torch.Tensor:
    """
    F.conv2d(x, w, bias, stride=1, padding=1) (then ReLU if `relu`) by Winograd F(4x4, 3x3),
    `tiles_per_chunk` tiles per matrix product (rounded to whole tile rows; default: the
    TILES_PER_CHUNK rule).

    Args:
        x: (N, C, H, W) float32, any memory format.
        filters: (36, C, K), `transform_filter(w)` of the (K, C, 3, 3) filters w.
        bias: (K,) or None.
    Returns:
        (N, K, H, W) float32 in channels_last.
    """
    n, c, h, w = x.shape
    k = filters.shape[2]
    tiles_h, tiles_w = -(-h // 4), -(-w // 4)
    # Zero padding of 1 around the image, and up to the next whole tile at the bottom and right.
    padded = x.new_empty(n, 4 * tiles_h + 2, 4 * tiles_w + 2, c)
    padded[:, 1 : h + 1, 1 : w + 1] = x.permute(0, 2, 3, 1)
    padded[:, :1].zero_()
    padded[:, h + 1 :].zero_()
    padded[:, :, :1].zero_()
    padded[:, :, w + 1 :].zero_()
    # The output at whole tiles (cropped at the end when H or W is not a multiple of 4), and
    # buffers reused by every chunk: one allocation each per call, not per chunk.
    out = x.new_empty(n, 4 * tiles_h, 4 * tiles_w, k)
    if tiles_per_chunk is None:
        tiles_per_chunk = TILES_PER_CHUNK * 256 // max(256, k)
    rows = max(1, tiles_per_chunk // tiles_w)
    chunk = min(rows, tiles_h) * tiles_w
    tiles_buf, v_buf, m_buf, y_buf = (x.new_empty(size) for size in (chunk * c * 36, 36 * chunk * c, 36 * chunk * k, 16 * chunk * k))
    for i in range(n):
        for r0 in range(0, tiles_h, rows):
            r1 = min(tiles_h, r0 + rows)
            p = (r1 - r0) * tiles_w
            # Overlapping 6x6 tiles at stride 4, laid out (6, 6, rows, tiles_w, C): each of the
            # 36 tile positions is a strided view whose C values are contiguous, so the copy
            # moves whole channel vectors (5x faster than gathering each tile's 36 values).
            rows_in = padded[i, 4 * r0 : 4 * r1 + 2]
            s_h, s_w, _ = rows_in.stride()
            tiles = tiles_buf[: 36 * p * c].view(6, 6, r1 - r0, tiles_w, c)
            tiles.copy_(rows_in.as_strided((6, 6, r1 - r0, tiles_w, c), (s_h, s_w, 4 * s_h, 4 * s_w, 1)))
            v = torch.mm(INPUT_TRANSFORM, tiles.view(36, p * c), out=v_buf[: 36 * p * c].view(36, p * c))
            m = torch.bmm(v.view(36, p, c), filters, out=m_buf[: 36 * p * k].view(36, p, k))
            y = torch.mm(OUTPUT_TRANSFORM, m.view(36, p * k), out=y_buf[: 16 * p * k].view(16, p * k))
            # (4, 4, rows, tiles_w, K) -> the output rows of this chunk, (rows, 4, tiles_w, 4, K).
            y = y.view(4, 4, r1 - r0, tiles_w, k).permute(2, 0, 3, 1, 4)
            target = out[i, 4 * r0 : 4 * r1].view(r1 - r0, 4, tiles_w, 4, k)
            if bias is None:
                target.copy_(y)
            else:
                torch.add(y, bias, out=target)
            if relu:
                target.clamp_(min=0)
    out = out.permute(0, 3, 1, 2)  # (N, K, 4 tiles_h, 4 tiles_w), channels_last
    if out.shape[-2:] != (h, w):
        out = out[:, :, :h, :w].contiguous(memory_format=torch.channels_last)
    return out


Mode = Union[bool, str]  # MODEL.RETINA_PLUGIN.WINOGRAD: "auto", True or False


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation, groups, winograd: Mode = True):
    """
    F.conv2d, by `winograd_conv2d` with its filters transformed for this call where it `applies`
    and `winograd` is True and it `pays_per_call`, or `winograd` is "auto" and it measured faster.
    """
    if winograd and applies(x, weight, stride, padding, dilation, groups):
        if winograd == "auto":
            algorithm, chunk = tuned(x, weight, bias)
            if algorithm == "winograd":
                return winograd_conv2d(x, transform_filter(weight), bias, tiles_per_chunk=chunk)
        elif pays_per_call(x, weight):
            return winograd_conv2d(x, transform_filter(weight), bias)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def tuned(x: torch.Tensor, weight: torch.Tensor, bias, filters: Optional[torch.Tensor] = None, relu: bool = False):
    """
    ("direct", None) or ("winograd", tiles per chunk) for the stride-1 padding-1 convolution of
    `x` (N, C, H, W) by `weight` (K, C, 3, 3), measured here (winograd_tuning.choose): with the
    filter transform in each Winograd call unless `filters` (transformed once) are given.
    """
    layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) else "nchw"
    kept = "kept" if filters is not None else "per call"
    shape = f"{'x'.join(map(str, x.shape))} {layout} -> {weight.shape[0]}, filters {kept}"

    def candidate(choice):
        algorithm, chunk = choice
        if algorithm == "direct":
            return lambda: F.conv2d(x, weight, bias, 1, 1)
        if filters is None:
            return lambda: winograd_conv2d(x, transform_filter(weight), bias, relu, chunk)
        return lambda: winograd_conv2d(x, filters, bias, relu, chunk)

    return winograd_tuning.choose(shape, candidate, distinct_chunks(x.shape[-2], x.shape[-1], weight.shape[0]))


def distinct_chunks(h: int, w: int, k: int):
    """The tiles per chunk of winograd_tuning.CHUNK_CANDIDATES that chunk an (H, W) map differently, smallest first."""
    tiles_h, tiles_w = -(-h // 4), -(-w // 4)
    rows = {}
    for chunk in winograd_tuning.CHUNK_CANDIDATES:
        rows.setdefault(min(tiles_h, max(1, chunk // tiles_w)), chunk)
    return tuple(rows.values())


def inference_layers(layers: Sequence[nn.Module], x: torch.Tensor, mode: Mode = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """
    A function equal to nn.Sequential(*layers) at inference on inputs like `x`, for a pass
    that calls it several times (the head, once per level): each nn.Conv2d where Winograd
    `applies` has its filters transformed once, here, and takes a ReLU that follows it into its
    last pass; the other layers are called as they are, and so are layers with hooks (int8
    calibration records their inputs). With `mode` "auto", each call runs the conv as
    Winograd or directly as measured for its input's shape (`tuned`).
    """
    steps, i = [], 0
    while i < len(layers):
        layer = layers[i]
        if (
            isinstance(layer, nn.Conv2d)
            and not hooked(layer)
            and applies(x, layer.weight, layer.stride, layer.padding, layer.dilation, layer.groups)
        ):
            relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU) and not hooked(layers[i + 1])
            filters = transform_filter(layer.weight)
            if mode == "auto":
                steps.append(functools.partial(_tuned_step, conv=layer, filters=filters, relu=relu))
            else:
                steps.append(functools.partial(winograd_conv2d, filters=filters, bias=layer.bias, relu=relu))
            i += 2 if relu else 1
        else:
            steps.append(layer)
            i += 1

    def run(y):
        for step in steps:
            y = step(y)
        return y

    return run


def _tuned_step(y: torch.Tensor, conv: nn.Conv2d, filters: torch.Tensor, relu: bool) -> torch.Tensor:
    """`conv` (then ReLU if `relu`) on `y`, by Winograd with the transformed `filters` where measured faster."""
    algorithm, chunk = tuned(y, conv.weight, conv.bias, filters, relu)
    if algorithm == "winograd":
        return winograd_conv2d(y, filters, conv.bias, relu, chunk)
    y = conv(y)
    return torch.relu(y) if relu else y


def hooked(module: nn.Module) -> bool:
    """Whether `module` has forward hooks, which a call that bypasses its forward would skip."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def use_winograd(model: nn.Module, mode: Mode = True) -> nn.Module:
    """
    Turn Winograd on in `model` (MODEL.RETINA_PLUGIN.WINOGRAD "auto" or True, `mode`): every
    Detectron2 Conv2d becomes an InferenceConv2d (same state_dict and training forward), and
    every module with a `winograd` attribute (InferenceConv2d, the head) gets `mode`. Returns `model`.
    """
    for m in model.modules():
        if type(m) is Conv2d:
            m.__class__ = InferenceConv2d
        if hasattr(m, "winograd"):
            m.winograd = mode
    return model


class InferenceConv2d(Conv2d):
    """
    Detectron2's Conv2d whose convolution at inference (eval mode, autograd off) is
    `conv2d`: Winograd F(4x4, 3x3) where it applies and `winograd` ("auto" or True,
    MODEL.RETINA_PLUGIN.WINOGRAD) picks it, else F.conv2d. Training and autograd use Detectron2's forward.
    """

    winograd = False

    def forward(self, x):
        if self.training or torch.is_grad_enabled():
            return super().forward(x)
        x = conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.winograd)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.activation is None else self.activation(x)
