"""
The int8 activation: uint8 data with one scale and zero point per tensor, and the
quantization parameters that cover a calibrated range.
"""
from typing import Dict, NamedTuple, Tuple

import torch

from ...errors import UserError


class Int8Error(UserError):
    """A model or calibration file that int8 inference cannot use; the message says which part."""


Ranges = Dict[str, Tuple[float, float]]  # activation name -> (low, high) of its calibration


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
