"""
The demo's drawing (`draw_detections`) of a dense image: 324 detections on a 1024 px grey
image at known places. Label text is measured by its dark box (Detectron2's draw_text paints a
black box at alpha 0.8): the grey background and the box colours have no pixel that dark.
"""
import logging

import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from retina_plugin.inference.visualizer import draw_detections

SIZE, GREY = 1024, 150
METADATA = Metadata(name="", thing_classes=["circle", "square", "triangle"], thing_colors=[(0, 114, 189), (217, 83, 25), (40, 200, 40)])


def grid_detections(count_per_side: int, step: int, side: int = 30) -> Instances:
    xy = 20 + step * np.stack(np.meshgrid(np.arange(count_per_side), np.arange(count_per_side)), -1).reshape(-1, 2)
    boxes = torch.tensor(np.concatenate([xy, xy + side], 1), dtype=torch.float32)
    n = len(boxes)
    return Instances((SIZE, SIZE), pred_boxes=Boxes(boxes), scores=torch.linspace(0.99, 0.5, n),
                     pred_classes=torch.arange(n) % 3)  # fmt: skip


def dark_share(rgb: np.ndarray) -> float:
    return float((rgb < 60).all(axis=2).mean())


def test_dense_detections_drop_their_labels(caplog):
    image = np.full((SIZE, SIZE, 3), GREY, np.uint8)
    instances = grid_detections(18, 56)
    assert len(instances) > 300
    with caplog.at_level(logging.INFO, logger="retina_plugin.inference.visualizer"):
        picture = draw_detections(image, instances, METADATA).get_image()
    assert picture.shape == (SIZE, SIZE, 3)  # the demo's pictures keep the image's size
    assert dark_share(picture) < 0.05  # Detectron2's 324 labels cover about 14 % of it
    # each class's boxes in its colour (alpha 0.5 on grey): the first box is a circle, the second a square
    for x, colour in ((20 + 10, METADATA.thing_colors[0]), (20 + 56 + 10, METADATA.thing_colors[1])):
        assert np.abs(picture[20, x].astype(int) - (np.array(colour) + GREY) / 2).max() < 25
    assert "circle 108 in RGB (0, 114, 189), square 108 in RGB (217, 83, 25), triangle 108" in caplog.text


def test_sparse_detections_are_detectron2s_picture():
    image = np.full((SIZE, SIZE, 3), GREY, np.uint8)
    instances = grid_detections(6, 150)
    np.random.seed(0)  # Visualizer jitters the colours at random
    picture = draw_detections(image, instances, METADATA).get_image()
    np.random.seed(0)
    expected = Visualizer(image, METADATA).draw_instance_predictions(instances).get_image()
    assert picture.shape == (SIZE, SIZE, 3) and (picture == expected).all()
    assert 0.002 < dark_share(picture) < 0.05  # with its labels
