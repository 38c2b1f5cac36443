"""Anchors of RetinaNet (paper section 4): A = octave scales x aspect ratios per location."""
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ANCHOR_GENERATOR_REGISTRY
from detectron2.structures import Boxes


def cell_anchors(base_size: float, octave_scales: Sequence[float], aspect_ratios: Sequence[float]):
    """
    The A anchors of one location, centred on (0, 0), scale-major then aspect ratio.
    An aspect ratio is height / width; all anchors of a scale have area (base_size * scale)^2.

    Returns: (A, 4) float32 XYXY.
    """
    anchors = []
    for scale in octave_scales:
        area = (base_size * scale) ** 2.0
        for aspect_ratio in aspect_ratios:
            w = math.sqrt(area / aspect_ratio)
            h = aspect_ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors)


@ANCHOR_GENERATOR_REGISTRY.register()
class RetinaAnchorGenerator(nn.Module):
    """
    One base size per pyramid level (32..512 on P3..P7), each times every octave scale
    (2^0, 2^(1/3), 2^(2/3)) and every aspect ratio (1:2, 1:1, 2:1): 9 anchors per location.
    The anchors of a feature-map size are computed once and cached per (size, device).
    """

    box_dim: int = 4

    @configurable
    def __init__(
        self,
        *,
        sizes: Sequence[float],
        octave_scales: Sequence[float],
        aspect_ratios: Sequence[float],
        strides: Sequence[int],
        offset: float = 0.0,
    ):
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"anchor sizes {list(sizes)} need one entry per level {list(strides)}")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"anchor offset {offset} must be in [0, 1)")
        self.strides = list(strides)
        self.offset = float(offset)
        self.cell_anchors = [cell_anchors(s, octave_scales, aspect_ratios) for s in sizes]
        self._cache: Dict[Tuple, List[torch.Tensor]] = {}

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        node = cfg.MODEL.RETINA_PLUGIN
        return {
            "sizes": list(node.ANCHOR_SIZES),
            "octave_scales": list(node.ANCHOR_OCTAVE_SCALES),
            "aspect_ratios": list(node.ANCHOR_ASPECT_RATIOS),
            "strides": [s.stride for s in input_shape],
            "offset": node.ANCHOR_OFFSET,
        }

    @property
    def num_cell_anchors(self) -> List[int]:
        return [len(c) for c in self.cell_anchors]

    @property
    def num_anchors(self) -> List[int]:
        return self.num_cell_anchors

    def _grid_anchors(self, size: Tuple[int, int], stride: int, base: torch.Tensor, device):
        # float32 arithmetic in this order gives the same anchors as Detectron2's generator.
        height, width = size
        shift_x = torch.arange(self.offset * stride, width * stride, step=stride, dtype=torch.float32, device=device)
        shift_y = torch.arange(self.offset * stride, height * stride, step=stride, dtype=torch.float32, device=device)
        shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        return (shifts.view(-1, 1, 4) + base.to(device).view(1, -1, 4)).reshape(-1, 4)

    def anchor_tensors(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Args:
            features: per level (N, C, Hi, Wi).
        Returns:
            per level a (Hi*Wi*A, 4) XYXY tensor, location-major then anchor (the head's order).
        """
        sizes = tuple(tuple(f.shape[-2:]) for f in features)
        device = features[0].device
        key = (sizes, str(device))
        if key not in self._cache:
            if len(self._cache) > 64:  # many image sizes (no fixed-size resize): stay bounded
                self._cache.clear()
            self._cache[key] = [
                self._grid_anchors(size, stride, base, device)
                for size, stride, base in zip(sizes, self.strides, self.cell_anchors)
            ]
        return self._cache[key]

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        """features: per level (N, C, Hi, Wi) -> per level Boxes of (Hi*Wi*A, 4)."""
        return [Boxes(a) for a in self.anchor_tensors(features)]
