"""
tools/evaluate_raster.py on a rotated model's detections: turned rectangles (four corners in the
raster's CRS, as predict_raster writes them) are scored as rotated pixel boxes with rotated IoU.

The hand-built case: a 200 x 200 raster at 0.5 m (UTM 33N), three ships 40 x 10 px turned by
45, -30 and 60 degrees. Detections:
  .9  ship 1 exactly                                   IoU 1
  .8  ship 2 slid along its length by 0.2 x 40 px      IoU 0.8 / 1.2 = 2/3
  .75 ship 3 slid across its width by 0.6 x 10 px      IoU 0.4 / 1.6 = 1/4 (its axis-aligned
      bounds overlap ship 3's by IoU 0.61: a match for the axis-aligned evaluation, none here)
  .7  open water                                       IoU 0
At IoU 0.5: TP 2, FP 2, FN 1; at 0.7: TP 1, FP 3, FN 2. COCO AP50: precision 1 up to recall
2/3, i.e. at 67 of the 101 recall points: AP50 = 67/101.
"""
import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from retina_plugin.geo.rotated_rectangles import has_turned_rectangles, polygons_to_rotated_boxes
from tool_runs import run_tool

TOOL = "tools/evaluate_raster.py"
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0)
CRS = "EPSG:32633"
SHIPS = [(50.0, 50.0, 40.0, 10.0, 45.0), (140.0, 60.0, 40.0, 10.0, -30.0), (100.0, 150.0, 40.0, 10.0, 60.0)]


def corners(box):
    """(4, 2) pixel corners of an XYWHA box, Detectron2's (Visualizer.draw_rotated_box_with_label)."""
    cx, cy, w, h, a = box
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    local = [(-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2)]
    return np.array([(s * y + c * x + cx, c * y - s * x + cy) for x, y in local])


def slid(box, along, across):
    """`box` moved by `along` px along its length (cos a, -sin a) and `across` px along its width (sin a, cos a)."""
    cx, cy, w, h, a = box
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    return (cx + along * c + across * s, cy - along * s + across * c, w, h, a)


def polygon(box):
    """The box as a map polygon (its corners through the raster's transform)."""
    return shapely.Polygon([TRANSFORM @ tuple(p) for p in corners(box)])


DETECTIONS = [(SHIPS[0], 0.9), (slid(SHIPS[1], 8, 0), 0.8), (slid(SHIPS[2], 0, 6), 0.75), ((170.0, 170.0, 20, 8, 10), 0.7)]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_rotated")
    profile = dict(driver="GTiff", width=200, height=200, count=3, dtype="uint8", crs=CRS, transform=TRANSFORM)
    with rasterio.open(root / "harbour.tif", "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 200, 200), dtype=np.uint8))
    gpd.GeoDataFrame({"label": ["ship"] * 3}, geometry=[polygon(b) for b in SHIPS], crs=CRS).to_file(root / "gt.gpkg")
    gpd.GeoDataFrame({"label": ["ship"] * 4, "score": [s for _, s in DETECTIONS], "source": ["harbour.tif"] * 4},
                     geometry=[polygon(b) for b, _ in DETECTIONS], crs=CRS).to_file(root / "det.gpkg")  # fmt: skip
    return root


def test_polygons_back_to_the_boxes():
    boxes = polygons_to_rotated_boxes([polygon(b) for b in SHIPS], TRANSFORM)
    for box, ship in zip(boxes, SHIPS):
        np.testing.assert_allclose(corners(box)[np.argsort(corners(box)[:, 0])],
                                   corners(ship)[np.argsort(corners(ship)[:, 0])], atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(boxes, SHIPS, atol=1e-4)  # named as the ships are: long side w, angle in [-90, 90)
    assert has_turned_rectangles([polygon(b) for b in SHIPS])
    assert not has_turned_rectangles([polygon((50, 50, 40, 10, 0)), polygon((90, 90, 30, 10, 90))])
    assert not has_turned_rectangles([shapely.Point(0, 0).buffer(5)])  # a round crown is no rectangle


def test_rotated_detections_by_the_tool(case):
    proc = run_tool(TOOL, "--predictions", str(case / "det.gpkg"), "--ground-truth", str(case / "gt.gpkg"),
                    "--iou", "0.5", "0.7", "--output-dir", str(case / "out"))  # fmt: skip
    bounds, ship_bounds = polygon(DETECTIONS[2][0]).envelope, polygon(SHIPS[2]).envelope
    assert bounds.intersection(ship_bounds).area / bounds.union(ship_bounds).area > 0.6  # axis-aligned: a match
    assert "within label, rotated boxes, on 1 raster(s)" in proc.stdout
    metrics = json.loads((case / "out" / "evaluation.json").read_text())
    assert metrics["boxes"] == "rotated"
    counts = {iou: {k: c[k] for k in ("tp", "fp", "fn")} for iou, c in metrics["overall"]["iou"].items()}
    assert counts == {"0.5": {"tp": 2, "fp": 2, "fn": 1}, "0.7": {"tp": 1, "fp": 3, "fn": 2}}
    assert metrics["overall"]["coco"]["AP50"] == pytest.approx(67 / 101, abs=1e-9)
    assert (case / "out" / "harbour_evaluation.png").stat().st_size > 0
