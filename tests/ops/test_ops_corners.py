"""
rotated_box_corners follows Detectron2's convention: the angle turns the box counter-clockwise
on the image (y down), as Detectron2's RotationTransform turns an image, and the corners' extent
is BoxMode's XYWHA -> XYXY conversion.
"""
import numpy as np
import torch
from detectron2.data.transforms import RotationTransform
from detectron2.structures import BoxMode, RotatedBoxes

from retina_plugin.ops import rotated_box_corners
from shapely_rotated import random_boxes


def test_a_quarter_turn_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 4.0, 2.0, 0.0], [10.0, 20.0, 4.0, 2.0, 90.0]])
    corners = rotated_box_corners(boxes)
    assert corners.shape == (2, 4, 2)
    # Outline order: top-left, top-right, bottom-right, bottom-left of the unturned box.
    assert torch.allclose(corners[0], torch.tensor([[8.0, 19.0], [12.0, 19.0], [12.0, 21.0], [8.0, 21.0]]))
    # Turned a quarter counter-clockwise on the image: the right end (12, 20) goes up to (10, 18).
    assert torch.allclose(corners[1], torch.tensor([[9.0, 22.0], [9.0, 18.0], [11.0, 18.0], [11.0, 22.0]]), atol=1e-5)


def test_turning_the_image_adds_to_the_angle():
    """Corners of boxes carried by Detectron2's image rotation (counter-clockwise by `turn`) are the
    corners of the boxes with the angle increased by `turn` and the centre carried along."""
    boxes = random_boxes(50, 3, extent=200.0).double()
    for turn in (30.0, -75.0, 140.0):
        rotation = RotationTransform(200, 200, turn, expand=False)
        carried = rotation.apply_coords(rotated_box_corners(boxes).reshape(-1, 2).numpy()).reshape(-1, 4, 2)
        turned = boxes.clone()
        turned[:, :2] = torch.from_numpy(rotation.apply_coords(boxes[:, :2].numpy()))
        turned[:, 4] += turn
        assert np.abs(rotated_box_corners(turned).numpy() - carried).max() < 1e-6


def test_the_corners_span_detectron2s_enclosing_box_and_area():
    boxes = random_boxes(100, 4, extent=200.0).double()
    corners = rotated_box_corners(boxes)
    spans = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    enclosing = BoxMode.convert(boxes.clone(), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    assert torch.allclose(spans, enclosing, atol=1e-6)
    x, y = corners[..., 0], corners[..., 1]
    shoelace = 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1)
    assert torch.allclose(shoelace, RotatedBoxes(boxes).area().double(), rtol=1e-6)
