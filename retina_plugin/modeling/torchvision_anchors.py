"""Anchors placed as torchvision's RetinaNet places them (torchvision.models.detection.anchor_utils)."""
from typing import List

import torch
from detectron2.modeling import ANCHOR_GENERATOR_REGISTRY
from torchvision.models.detection.anchor_utils import AnchorGenerator

from .anchor_generator import RetinaAnchorGenerator


@ANCHOR_GENERATOR_REGISTRY.register()
class TorchvisionAnchorGenerator(RetinaAnchorGenerator):
    """
    RetinaAnchorGenerator (same keys: MODEL.ANCHOR_GENERATOR.SIZES, ASPECT_RATIOS, OFFSET, and
    the strides of the levels) with torchvision's two differences, so that weights trained in
    torchvision (`retinanet_resnet50_fpn`, `_v2`, DeepForest) see the anchors they were trained on:

    - cell anchors are torchvision's `AnchorGenerator` ones, corners rounded to whole pixels
      (`round()`), in Detectron2's size-major order (the converter permutes the predictors'
      output channels from torchvision's ratio-major order to it);
    - per level and axis, the stride is (padded image size) // (grid size), e.g. 61 and 114 on
      P6 / P7 of an 800 px side (grids 13 and 7) instead of 64 and 128. The padded size is the
      first level's grid times its stride: the backbone pads to a multiple of its largest
      input stride (32), which the first level's (8) divides, so this is exact.
    """

    def generate_cell_anchors(self, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)):
        """(len(sizes) * len(aspect_ratios), 4) XYXY anchors centred on 0, size-major."""
        ratio_major = AnchorGenerator(sizes=(tuple(sizes),), aspect_ratios=(tuple(aspect_ratios),)).cell_anchors[0]
        return ratio_major.view(len(aspect_ratios), len(sizes), 4).transpose(0, 1).reshape(-1, 4)

    def _grid_anchors(self, grid_sizes: List[List[int]]) -> List[torch.Tensor]:
        """Per level (Hi*Wi*A, 4): location-major, then the cell anchors, as the head's rows."""
        padded_height, padded_width = (int(size) * self.strides[0] for size in grid_sizes[0])
        anchors = []
        for (grid_height, grid_width), base_anchors in zip(grid_sizes, self.cell_anchors):
            stride_y, stride_x = padded_height // int(grid_height), padded_width // int(grid_width)
            device = base_anchors.device
            shifts_x = (torch.arange(int(grid_width), device=device, dtype=torch.float32) + self.offset) * stride_x
            shifts_y = (torch.arange(int(grid_height), device=device, dtype=torch.float32) + self.offset) * stride_y
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base_anchors.view(1, -1, 4)).reshape(-1, 4))
        return anchors
