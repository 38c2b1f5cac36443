"""
The rotated ops go where a model is exported: pairwise_iou_rotated traces (the dense path, the
same matrix as the culled one) and the IoU and both NMS compile with torch.jit.script.
"""
import torch

from retina_plugin.ops import batched_nms_rotated, nms_rotated, pairwise_iou_rotated
from shapely_rotated import random_boxes


def test_traced_iou_is_the_eager_iou_on_other_boxes():
    traced = torch.jit.trace(pairwise_iou_rotated, (random_boxes(40, 1), random_boxes(30, 2)), check_trace=False)
    boxes1, boxes2 = random_boxes(40, 3), random_boxes(30, 4)
    eager = pairwise_iou_rotated(boxes1, boxes2)
    assert (eager > 0).sum() > 20
    assert torch.allclose(traced(boxes1, boxes2), eager, rtol=0, atol=1e-6)


def test_scripted_ops_are_the_eager_ops():
    boxes, scores = random_boxes(300, 5, extent=150.0), torch.rand(300, generator=torch.Generator().manual_seed(5))
    classes = torch.arange(300) % 3
    scripted_iou = torch.jit.script(pairwise_iou_rotated)
    assert torch.allclose(scripted_iou(boxes, boxes[:50]), pairwise_iou_rotated(boxes, boxes[:50]), rtol=0, atol=1e-6)
    kept = nms_rotated(boxes, scores, 0.3)
    assert 50 < kept.numel() < 300
    assert torch.equal(torch.jit.script(nms_rotated)(boxes, scores, 0.3), kept)
    batched = torch.jit.script(batched_nms_rotated)(boxes, scores, classes, 0.3)
    assert torch.equal(batched, batched_nms_rotated(boxes, scores, classes, 0.3))
