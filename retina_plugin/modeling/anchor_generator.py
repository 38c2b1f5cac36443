"""Anchors of RetinaNet (paper section 4): A = sizes x aspect ratios per location and level."""
from typing import Dict, List, Tuple

import torch
from torch import nn
from detectron2.config import configurable
from detectron2.modeling import ANCHOR_GENERATOR_REGISTRY
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes


@ANCHOR_GENERATOR_REGISTRY.register()
class RetinaAnchorGenerator(DefaultAnchorGenerator):
    """
    Detectron2's DefaultAnchorGenerator, reading the same keys (MODEL.ANCHOR_GENERATOR.SIZES,
    ASPECT_RATIOS, OFFSET) with the same meaning, that computes the anchors of a feature-map size
    once and keeps them per (sizes, device): an inference at a fixed input size then spends no
    time on anchors. RetinaNet's anchors (paper section 4) are, per level, the base size 32..512
    of P3..P7 times the octave scales 2^0, 2^(1/3), 2^(2/3), at aspect ratios 1:2, 1:1, 2:1:
    SIZES [[32, 40.3, 50.8], [64, 80.6, 101.6], ...], ASPECT_RATIOS [[0.5, 1.0, 2.0]], 9 per location.
    """

    @configurable
    def __init__(self, *, sizes, aspect_ratios, strides, offset: float = 0.0):
        super().__init__(sizes=sizes, aspect_ratios=aspect_ratios, strides=strides, offset=offset)
        self._cache: Dict[Tuple, List[Boxes]] = {}

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()  # the cell anchors move (device, dtype): so must the kept grids
        return super()._apply(fn, *args, **kwargs)

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        """
        Args:
            features: per level (N, C, Hi, Wi).
        Returns:
            per level Boxes of (Hi*Wi*A, 4) XYXY, location-major then anchor (the head's order).
        """
        key = (tuple(tuple(f.shape[-2:]) for f in features), str(features[0].device))
        if key not in self._cache:
            if len(self._cache) > 64:  # many image sizes (no fixed-size resize): stay bounded
                self._cache.clear()
            self._cache[key] = super().forward(features)
        return self._cache[key]


def anchor_tensors(anchor_generator: nn.Module, features: List[torch.Tensor]) -> List[torch.Tensor]:
    """
    The anchors of any Detectron2 anchor generator as tensors: features per level (N, C, Hi, Wi)
    -> per level (Hi*Wi*A, 4) XYXY, or (Hi*Wi*A, 5) XYWHA from Detectron2's RotatedAnchorGenerator,
    in the order the head's rows follow.
    """
    return [boxes.tensor for boxes in anchor_generator(features)]
