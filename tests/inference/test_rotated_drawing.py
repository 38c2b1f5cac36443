"""
The demo's drawing (`draw_detections`) of rotated detections (RotatedBoxes, XYWHA), hand-built:
Detectron2's Visualizer draws them as rotated rectangles, with labels while they fit and, above
that density, without labels in one colour per class; video frames keep each object's colour.
Edges are found on the picture between the corners `retina_plugin.ops.rotated_box_corners`
gives: top-left, top-right, bottom-right, bottom-left of the unrotated box, so edge 0 (top) is
the one Visualizer dashes and edges 1-3 are solid.
"""
import logging

import cv2
import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.structures import Instances, RotatedBoxes
from detectron2.utils.visualizer import Visualizer

from retina_plugin.cli.demo import demo_config
from retina_plugin.inference.visualizer import DetectionVisualizer, RotatedBoxVideoVisualizer, draw_detections
from retina_plugin.ops import rotated_box_corners
from test_demo import SMALL_MODEL_OPTS as DEMO_OPTS
from test_demo import count_changed_pixels, write_video
from tool_runs import BASE_CONFIG, FEW_CANDIDATES, ROTATED_OPTS, run_tool

GREY = 150
METADATA = Metadata(name="", thing_classes=["ship", "car"], thing_colors=[(0, 114, 189), (217, 83, 25)])


def rotated_instances(boxes, size, classes=None) -> Instances:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5)
    n = len(boxes)
    classes = torch.zeros(n, dtype=torch.int64) if classes is None else torch.as_tensor(classes)
    return Instances(size, pred_boxes=RotatedBoxes(boxes), scores=torch.linspace(0.99, 0.5, n), pred_classes=classes)


SOLID_EDGES = [1, 2, 3]


def edge_points(boxes, fraction=0.5) -> np.ndarray:
    """(N, 4, 2) the point at `fraction` along each edge of each rotated box (x, y)."""
    corners = rotated_box_corners(torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 5))
    return ((1 - fraction) * corners + fraction * corners.roll(-1, dims=1)).numpy()


def painted(picture: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether the pixel at each (x, y) point differs from the grey background."""
    xy = np.round(points).astype(int).reshape(-1, 2)
    return np.abs(picture[xy[:, 1], xy[:, 0]].astype(int) - GREY).max(axis=1) > 30


def test_a_rotated_detection_is_drawn_as_a_rotated_rectangle():
    image = np.full((256, 256, 3), GREY, np.uint8)
    box = [128.0, 128.0, 160.0, 40.0, 30.0]
    instances = rotated_instances([box], (256, 256))
    np.random.seed(0)  # Visualizer jitters the colours at random
    picture = draw_detections(image, instances, METADATA).get_image()
    np.random.seed(0)
    expected = Visualizer(image, METADATA).draw_instance_predictions(instances).get_image()
    assert picture.shape == (256, 256, 3) and (picture == expected).all()  # Detectron2's own picture

    assert painted(picture, edge_points(box)[:, SOLID_EDGES]).all()
    dashed = np.concatenate([edge_points(box, f)[:, 0] for f in np.linspace(0.1, 0.9, 9)])
    assert painted(picture, dashed).sum() >= 4
    # Near the corners of the enclosing axis-aligned box (x 48.7..207.3, y 70.7..185.3), 14 px
    # and more off the rotated rectangle: grey, where a horizontal drawing of the box paints.
    enclosing_corners = np.array([[51.0, 73.0], [205.0, 73.0], [51.0, 183.0], [205.0, 183.0]])
    assert not painted(picture, enclosing_corners).any()


def test_dense_rotated_detections_drop_their_labels_and_keep_their_class_colours(caplog):
    size, step = 1024, 56
    centres = 40 + step * np.stack(np.meshgrid(np.arange(18), np.arange(18)), -1).reshape(-1, 2)
    boxes = np.concatenate([centres, np.tile([[40.0, 12.0, 45.0]], (len(centres), 1))], 1)
    classes = torch.arange(len(boxes)) % 2
    instances = rotated_instances(boxes, (size, size), classes)
    image = np.full((size, size, 3), GREY, np.uint8)
    with caplog.at_level(logging.INFO, logger="retina_plugin.inference.visualizer"):
        picture = draw_detections(image, instances, METADATA).get_image()
    assert picture.shape == (size, size, 3)
    assert float((picture < 60).all(axis=2).mean()) < 0.005  # no label boxes (they are near black)
    assert "324 detections, too dense for labels on 1024x1024" in caplog.text
    assert "ship 162 in RGB (0, 114, 189), car 162 in RGB (217, 83, 25)" in caplog.text
    midpoints = edge_points(boxes)[:, SOLID_EDGES]
    assert painted(picture, midpoints).all()
    colours = np.array([*METADATA.thing_colors, (GREY, GREY, GREY)])
    for index in range(4):  # ship, car, ship, car: each edge in its class's colour (opaque lines)
        x, y = np.round(midpoints[index]).astype(int).T
        distances = np.abs(picture[y, x].astype(int)[:, None] - colours[None]).sum(2)  # (4 edges, 3 colours)
        assert (distances.argmin(1) == index % 2).all(), picture[y, x]


def test_video_frames_of_rotated_detections_keep_each_objects_colour():
    """
    Detectron2's VideoVisualizer matches an object to the last frame's by pycocotools' box IoU,
    which takes 4 numbers a box; RotatedBoxVideoVisualizer matches rotated boxes by their
    enclosing boxes: both objects, moved a little, keep their colours in the second frame.
    """
    np.random.seed(0)  # new objects get random colours
    visualizer = RotatedBoxVideoVisualizer(Metadata(name="", thing_classes=["ship", "car"]))
    frame = np.full((256, 256, 3), GREY, np.uint8)
    frames = [[[80.0, 70.0, 100.0, 20.0, 30.0], [170.0, 180.0, 100.0, 20.0, -30.0]],
              [[82.0, 71.0, 100.0, 20.0, 33.0], [170.0, 183.0, 100.0, 20.0, -27.0]]]  # fmt: skip
    colours = []
    for boxes in frames:
        picture = visualizer.draw_instance_predictions(frame, rotated_instances(boxes, (256, 256), [0, 1])).get_image()
        points = np.round(edge_points(boxes)[:, 1:3]).astype(int)  # the right and bottom edges (solid, label-free)
        assert painted(picture, points).all()
        colours.append(picture[points[..., 1], points[..., 0]].astype(int))  # (2 objects, 2 edges, 3)
    assert np.abs(colours[0] - colours[1]).max() <= 10
    assert np.abs(colours[0][0] - colours[0][1]).max() > 30  # two objects, two colours


def test_demo_draws_a_rotated_models_detections(tmp_path, single_thread):
    """tools/demo.py with a rotated RetinaNetPlugin (random weights): images, tiled, and a video."""
    image = np.full((120, 160, 3), GREY, np.uint8)
    image[30:90, 40:120] = (40, 160, 220)
    cv2.imwrite(str(tmp_path / "scene.png"), image)
    opts = [*DEMO_OPTS, *(str(x) for x in ROTATED_OPTS + FEW_CANDIDATES)]
    for extra in ([], ["--tile", "64", "--overlap", "0.25"]):
        out = tmp_path / f"out{len(extra)}"
        result = run_tool("tools/demo.py", "--config-file", BASE_CONFIG, "--confidence-threshold", "0.3",
                          "--input", str(tmp_path / "scene.png"), "--output", str(out), *extra, "--opts", *opts)  # fmt: skip
        written = cv2.imread(str(out / "scene.png"))
        assert written is not None and written.shape == image.shape
        assert count_changed_pixels(written, image) > 100, result.stdout + result.stderr
        assert "scene.png: detected" in result.stdout + result.stderr

    cfg, _ = demo_config(BASE_CONFIG, opts, confidence_threshold=0.3)
    demo = DetectionVisualizer(cfg)
    grey = np.full_like(image, GREY)
    predictions, picture = demo.run_on_image(grey)
    instances = predictions["instances"]
    assert isinstance(instances.pred_boxes, RotatedBoxes) and len(instances) > 0
    points = edge_points(instances.pred_boxes.tensor.numpy())[:, SOLID_EDGES].reshape(-1, 2)
    points = points[(points[:, 0] >= 0) & (points[:, 0] < 159.5) & (points[:, 1] >= 0) & (points[:, 1] < 119.5)]
    assert len(points) > 0 and painted(picture.get_image(), points).all()

    write_video(tmp_path / "clip.mp4", [image, np.roll(image, 3, axis=1), np.roll(image, 6, axis=1)])
    video = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    try:
        frames = list(demo.run_on_video(video))  # colours kept from frame to frame by RotatedBoxVideoVisualizer
    finally:
        video.release()
    assert len(frames) == 3 and all(f.shape == image.shape for f in frames)
