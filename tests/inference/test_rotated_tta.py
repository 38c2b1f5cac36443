"""
Test-time augmentation of a rotated RetinaNetPlugin (retina_plugin/inference/tta.py): rotated
boxes mapped through DatasetMapperTTA's resizes and flips and back are the boxes; a rotated model
symmetric under a horizontal flip gives its plain result with the flip TTA (the flipped version's
candidates mapped back onto its own, merged by rotated NMS); weighted box fusion is refused for
rotated boxes in one line.
"""
import pytest
import torch
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from detectron2.structures import RotatedBoxes

from retina_plugin.compare import compare_detections
from retina_plugin.errors import UserError
from retina_plugin.inference.tta import RetinaNetWithTTA, map_boxes_back
from flip_symmetry import HEIGHT, WIDTH, symmetric_cfg, symmetric_model
from tool_runs import FEW_CANDIDATES, ROTATED_OPTS


def same_rectangles(a: torch.Tensor, b: torch.Tensor, atol=1e-3) -> bool:
    """(N, 5) rotated boxes: equal centres and sizes, angles equal modulo 360 degrees."""
    turn = torch.remainder(a[:, 4] - b[:, 4] + 180.0, 360.0) - 180.0
    return torch.allclose(a[:, :4], b[:, :4], atol=atol, rtol=0) and bool((turn.abs() < atol).all())


def test_rotated_boxes_mapped_back_through_resizes_and_flips():
    image = torch.zeros(3, 100, 160, dtype=torch.uint8)
    versions = DatasetMapperTTA(min_sizes=(100, 150), max_size=1000, flip=True)({"image": image, "height": 100, "width": 160})
    assert [tuple(v["image"].shape[1:]) for v in versions] == [(100, 160), (100, 160), (150, 240), (150, 240)]
    boxes = torch.tensor([[30.0, 20.0, 40.0, 10.0, 30.0], [100.0, 60.0, 20.0, 8.0, -170.0]])
    original = boxes.clone()
    for version in versions:
        transforms = version["transforms"]
        augmented = torch.as_tensor(transforms.apply_rotated_box(boxes.numpy().copy()), dtype=torch.float32)
        assert same_rectangles(map_boxes_back(augmented, transforms), boxes)
    assert torch.equal(boxes, original)  # mapping back leaves its input alone
    # By hand: the flip at the image's own size mirrors x in the 160 px width and negates the angle.
    flipped = torch.tensor([[130.0, 20.0, 40.0, 10.0, -30.0], [60.0, 60.0, 20.0, 8.0, 170.0]])
    assert same_rectangles(map_boxes_back(flipped, versions[1]["transforms"]), boxes)
    # ... and the resize by 1.5 scales centres and sizes, keeping the angle.
    resized = torch.tensor([[45.0, 30.0, 60.0, 15.0, 30.0], [150.0, 90.0, 30.0, 12.0, -170.0]])
    assert same_rectangles(map_boxes_back(resized, versions[2]["transforms"]), boxes)


def symmetric_rotated_cfg(merge="nms"):
    return symmetric_cfg(merge, *ROTATED_OPTS, *FEW_CANDIDATES)


def test_flip_tta_of_a_symmetric_rotated_model_is_the_plain_result(single_thread):
    cfg = symmetric_rotated_cfg()
    model = symmetric_model(cfg)
    image = (torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    tta = RetinaNetWithTTA(cfg, model)
    with torch.no_grad():
        plain = model([{"image": image}])[0]["instances"]
        (output,) = tta([{"image": image}])
        versions, transforms = tta.versions({"image": image, "height": HEIGHT, "width": WIDTH})
        own, flipped = tta.candidates(versions, transforms)

    assert isinstance(plain.pred_boxes, RotatedBoxes) and isinstance(output["instances"].pred_boxes, RotatedBoxes)
    assert own[0].shape[1] == 5 and plain.pred_boxes.tensor[:, 4].abs().max() > 1  # turned boxes, not only angle 0
    # The flipped version's candidates, mapped back (x mirrored, angle negated), are the image's own.
    assert compare_detections(flipped, own, min_iou=0.999, score_atol=1e-5)["match"]
    comparison = compare_detections(output["instances"], plain, min_iou=0.999, score_atol=1e-5)
    assert comparison["match"], comparison
    assert comparison["matched"] >= 95 and len(plain) == 100


def test_weighted_box_fusion_is_refused_for_rotated_boxes():
    cfg = symmetric_rotated_cfg("wbf")
    with pytest.raises(UserError, match=r"TTA_MERGE wbf averages boxes, which rotated boxes .* use TTA_MERGE nms"):
        RetinaNetWithTTA(cfg, symmetric_model(symmetric_rotated_cfg()))
