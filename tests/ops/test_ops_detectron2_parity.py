"""
Where Detectron2's compiled ops load (`detectron2._C`), ours give the same IoU and keep the same
boxes; where they do not (this project's Detectron2 is a cp310 build on Python 3.11), the tests
skip with the import error.
"""
import importlib

import pytest
import torch

from retina_plugin.ops import batched_nms_rotated, nms_rotated, pairwise_iou_rotated
from shapely_rotated import random_boxes


def _detectron2_layers():
    try:
        importlib.import_module("detectron2._C")
    except ImportError as error:
        pytest.skip(f"Detectron2's compiled ops do not load: {error}")
    from detectron2 import layers

    return layers


def test_iou_equals_detectron2s():
    layers = _detectron2_layers()
    boxes1, boxes2 = random_boxes(200, 1, extent=150.0), random_boxes(150, 2, extent=150.0)
    theirs = layers.pairwise_iou_rotated(boxes1, boxes2)
    assert (theirs > 0).sum() > 100
    assert torch.allclose(pairwise_iou_rotated(boxes1, boxes2), theirs, rtol=0, atol=1e-4)


def test_nms_keeps_detectron2s_boxes():
    layers = _detectron2_layers()
    boxes = random_boxes(400, 3, extent=200.0)
    scores = torch.rand(400, generator=torch.Generator().manual_seed(3))  # no ties
    classes = torch.arange(400) % 4
    for threshold in (0.1, 0.5):
        assert torch.equal(nms_rotated(boxes, scores, threshold), layers.nms_rotated(boxes, scores, threshold))
        assert torch.equal(
            batched_nms_rotated(boxes, scores, classes, threshold),
            layers.batched_nms_rotated(boxes, scores, classes, threshold),
        )
