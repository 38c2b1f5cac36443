"""
Rotated detections as map features (retina_plugin/geo/vectors.py, geo/predict.py): each rotated
pixel box (XYWHA) becomes the polygon of its four corners in the raster's CRS, checked on a real
GeoTIFF against corners computed by hand; the COCO results keep the five numbers; and
tools/predict_raster.py runs a rotated model.
"""
import json
import math
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

import tool_runs
from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.geo.predict import RasterPredictor, coco_results
from retina_plugin.geo.scenes import write_shapes_scene
from retina_plugin.geo.vectors import detections_frame, write_detections
from retina_plugin.ops import rotated_box_corners
from tool_runs import BASE_CONFIG, run_tool

CRS = "EPSG:32633"
ORIGIN_X, ORIGIN_Y, PIXEL = 500000.0, 5400000.0, 0.1  # upper-left corner, 0.1 m pixels
TILE = 128
# The tests' small model (ResNet-18, random weights) with Detectron2's switch to rotated boxes;
# PRIOR_PROB 0.3 puts its scores near 0.3, so it detects (random) boxes on any raster.
RASTER_OPTS = [
    *tool_runs.SMALL_MODEL_OPTS,
    *tool_runs.ROTATED_OPTS, "MODEL.RETINANET.PRIOR_PROB", "0.3",
    "TEST.DETECTIONS_PER_IMAGE", "30", "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "100", "MODEL.WEIGHTS", "",
]  # fmt: skip


def write_geotiff(path, size=256):
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=CRS,
                   transform=from_origin(ORIGIN_X, ORIGIN_Y, PIXEL, PIXEL))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, size, size), 120, np.uint8))


def hand_corners(cx, cy, w, h, degrees):
    """
    A rotated box's corners in pixels by Detectron2's convention (angle counter-clockwise as
    seen on the image, whose y axis points down): the corner (u, v) of the unrotated box,
    u = ±w/2, v = ±h/2, goes to (cx + u cos a + v sin a, cy - u sin a + v cos a).
    """
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [(cx + u * c + v * s, cy - u * s + v * c) for u, v in ((-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2))]


def to_map(points):
    """Pixel (column, row) -> EPSG:32633 (x, y) of the raster: x = 500000 + 0.1 col, y = 5400000 - 0.1 row."""
    return [(ORIGIN_X + PIXEL * col, ORIGIN_Y - PIXEL * row) for col, row in points]


def same_ring(polygon, expected_points, atol=1e-6):
    """The polygon's exterior is the four expected points, in order along the ring from any start, either direction."""
    ring = np.asarray(polygon.exterior.coords)[:-1]
    expected = np.asarray(expected_points)
    assert ring.shape == (4, 2), ring
    for candidate in (expected, expected[::-1]):
        for shift in range(4):
            if np.allclose(ring, np.roll(candidate, shift, axis=0), rtol=0, atol=atol):
                return True
    return False


def test_rotated_detections_are_their_four_corners_in_the_rasters_crs(tmp_path):
    path = tmp_path / "scene.tif"
    write_geotiff(path)
    with rasterio.open(path) as src:
        transform, crs = src.transform, src.crs
    boxes = np.array([[100.0, 50.0, 40.0, 20.0, 90.0], [200.0, 100.0, 40.0, 20.0, 30.0], [60.0, 180.0, 30.0, 10.0, -135.0]])
    # By hand: turned 90 degrees, the 40 x 20 box stands 20 wide and 40 tall: columns 90..110, rows 30..70.
    assert np.allclose(sorted(hand_corners(*boxes[0])), [(90, 30), (90, 70), (110, 30), (110, 70)])
    # Turned 30 degrees: its long side runs from (177.68, 101.34) up to the right to (212.32, 81.34).
    assert np.allclose(hand_corners(*boxes[1]), [(187.679, 118.660), (177.679, 101.340), (212.321, 81.340), (222.321, 98.660)], atol=1e-3)

    frame = detections_frame(boxes, [0.9, 0.8, 0.7], [0, 1, 0], ["ship", "car"], transform, crs, str(path))
    out = tmp_path / "detections.gpkg"
    write_detections([frame], str(out))
    written = gpd.read_file(out)
    assert written.crs == rasterio.crs.CRS.from_string(CRS)
    assert list(written.label) == ["ship", "car", "ship"]
    for polygon, box in zip(written.geometry.values, boxes):
        expected = to_map(hand_corners(*box))
        assert same_ring(polygon, expected), (list(polygon.exterior.coords), expected)
        assert abs(polygon.area - box[2] * box[3] * PIXEL**2) < 1e-6  # a rectangle of w x h pixels
        assert np.allclose(polygon.centroid.coords[0], to_map([box[:2]])[0], rtol=0, atol=1e-6)
    # The 90 degree box in metres, by hand: x 500009..500011, y 5399993..5399997.
    assert np.allclose(written.geometry.values[0].bounds, (500009.0, 5399993.0, 500011.0, 5399997.0), rtol=0, atol=1e-6)


def test_coco_results_of_rotated_detections_keep_the_five_numbers():
    d = SimpleNamespace(path="scene.tif", boxes=np.array([[200.0, 100.0, 40.0, 20.0, 30.0]]), scores=np.array([0.8]),
                        classes=np.array([1]))  # fmt: skip
    assert coco_results([d], {0: 3, 1: 7}) == [
        {"image_id": 1, "file_name": "scene.tif", "category_id": 7, "bbox": [200.0, 100.0, 40.0, 20.0, 30.0], "score": 0.8}
    ]
    horizontal = SimpleNamespace(path="scene.tif", boxes=np.array([[10.0, 20.0, 50.0, 30.0]]), scores=np.array([0.5]), classes=np.array([0]))
    assert coco_results([horizontal])[0]["bbox"] == [10.0, 20.0, 40.0, 10.0]


def test_predict_raster_with_a_rotated_model(tmp_path, single_thread):
    """
    tools/predict_raster.py with a rotated RetinaNetPlugin (random weights) on a generated GeoTIFF:
    every feature is the rectangle of its COCO result's XYWHA box through the raster's transform;
    and the windowed run equals tiled inference on the raster loaded whole.
    """
    scene = write_shapes_scene(str(tmp_path / "scene.tif"), 256, seed=3)
    assert scene.transform == from_origin(ORIGIN_X, ORIGIN_Y, PIXEL, PIXEL)
    out, coco = tmp_path / "dets.gpkg", tmp_path / "dets.json"
    run_tool("tools/predict_raster.py", "--config-file", BASE_CONFIG, "--input", scene.path, "--output", str(out),
             "--tile", str(TILE), "--overlap", "0.25", "--coco-json", str(coco), "--opts", *RASTER_OPTS)  # fmt: skip
    frame = gpd.read_file(out)
    results = json.loads(coco.read_text())
    assert frame.crs == rasterio.crs.CRS.from_string(CRS)
    assert len(frame) == len(results) > 9  # more than one a window
    boxes = np.array([r["bbox"] for r in results])
    assert boxes.shape[1] == 5 and np.abs(boxes[:, 4]).max() > 0.1  # rotated boxes, turned by the regression
    np.testing.assert_allclose(frame.score.values, [r["score"] for r in results], rtol=1e-6)
    corners = rotated_box_corners(torch.as_tensor(boxes)).numpy()
    for polygon, box, box_corners in zip(frame.geometry.values, boxes, corners):
        assert same_ring(polygon, to_map(box_corners))
        assert abs(polygon.area - box[2] * box[3] * PIXEL**2) < 1e-6

    cfg, _ = raster_config(BASE_CONFIG, RASTER_OPTS, tile=TILE, overlap=0.25)
    predictor = RasterPredictor(cfg)
    windowed = predictor.predict(scene.path, progress=False)
    with rasterio.open(scene.path) as src:
        rgb = src.read()
    whole = predictor(np.ascontiguousarray(rgb[::-1].transpose(1, 2, 0)))["instances"]  # BGR, as OpenCV reads
    assert windowed.boxes.shape[1] == 5 and len(windowed.boxes) > 9
    np.testing.assert_allclose(windowed.boxes, whole.pred_boxes.tensor.numpy(), atol=1e-4)
    np.testing.assert_allclose(windowed.scores, whole.scores.numpy(), atol=1e-5)
