"""
DeepForest's own `predict_tile` (the `deepforest` package, in the peer venv of
scripts/setup_peers_venv.sh) against tools/predict_raster.py on the converted model, on one
generated GeoTIFF: the same boxes in map coordinates, the same scores, the same count.

The DeepForest side runs scripts/deepforest_peer.py: a random tree model saved as DeepForest
saves it (model.safetensors + config.json), then loaded and run as a DeepForest user runs it
(400 px windows, 5 % overlap, mosaic NMS at 0.15). The plugin side converts that folder
(retina_plugin.weights.convert, as tools/convert_weights.py does) and runs predict_raster with
the written config alone.
"""
import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from retina_plugin.compare import compare_detections
from retina_plugin.config import load_config
from retina_plugin.geo.scenes import write_shapes_scene
from retina_plugin.weights.convert import convert_to_plugin
from tool_runs import REPO, run_tool

PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = REPO / "scripts" / "deepforest_peer.py"
# Not square (x and y cannot be swapped unseen), 2 x 2 windows of 400 px: starts 0 and 160
# across, 0 and 100 down (floor(400 * 0.05) = 20 px of overlap at least).
WIDTH, HEIGHT = 560, 500


@pytest.fixture(scope="module")
def peers_python():
    """The peer venv's interpreter; scripts/setup_peers_venv.sh returns at once when it is set up."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_peers_venv.sh")], env=dict(os.environ, BASE_VENV=sys.prefix),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"scripts/setup_peers_venv.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return str(PEERS_PYTHON)


def run_peer(peers_python, tmp_path, *args):
    proc = subprocess.run(
        [peers_python, str(PEER_SCRIPT), "--torch-home", str(tmp_path / "torch_home"), *map(str, args)],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"deepforest_peer.py {' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def write_raster(path):
    """A WIDTH x HEIGHT crop of a generated shapes scene (EPSG:32633, 0.1 m pixels), uncompressed for DeepForest's PIL reader."""
    scene = write_shapes_scene(str(path.with_name("scene.tif")), 640, seed=11)
    with rasterio.open(scene.path) as source:
        data = source.read(window=Window(0, 0, WIDTH, HEIGHT))
        profile = dict(driver="GTiff", width=WIDTH, height=HEIGHT, count=3, dtype="uint8", crs=source.crs, transform=source.transform)
    with rasterio.open(path, "w", **profile) as target:
        target.write(data)
    return profile


def map_boxes(xmin, ymin, xmax, ymax, transform):
    """Pixel boxes (pixel 0's left edge at x = 0) through the raster's transform: (N, 4) map boxes, metres from its origin."""
    t = transform
    (x0, y0), (x1, y1) = ((t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f) for x, y in ((xmin, ymin), (xmax, ymax)))
    boxes = np.stack([np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)], axis=1)
    return boxes - np.array([transform.c, transform.f, transform.c, transform.f])


def test_predict_raster_gives_deepforests_predict_tile(peers_python, tmp_path):
    raster, model_dir = tmp_path / "plot.tif", tmp_path / "deepforest-tree"
    profile = write_raster(raster)
    run_peer(
        peers_python, tmp_path, model_dir, "--save-random", "--seed", 0, "--images", raster,
        "--predict-tile", raster, "--out", tmp_path / "deepforest.json", "--threads", 1,
    )  # fmt: skip
    theirs = json.loads((tmp_path / "deepforest.json").read_text())

    config = convert_to_plugin("deepforest", str(model_dir), str(tmp_path / "converted"))
    node = load_config(config).MODEL.RETINA_PLUGIN
    assert (node.TILE_SIZE, node.TILE_OVERLAP, list(node.TILE_RESIZE), node.TILE_MERGE, node.TILE_NMS_THRESH) == (
        400, 0.05, [800, 1333], "deepforest", 0.15
    )
    # The written config keeps Detectron2's MODEL.DEVICE; nothing else is added to it.
    run_tool("tools/predict_raster.py", "--config-file", config, "--input", str(raster), "--output", str(tmp_path / "trees.gpkg"), "MODEL.DEVICE", "cpu")
    ours = gpd.read_file(tmp_path / "trees.gpkg")

    assert ours.crs == profile["crs"] and set(ours["label"]) == set(theirs["label"]) == {"Tree"}
    assert 30 <= len(theirs["score"]) < 4 * 300, "the random model's detections: some per window, none capped"
    their_boxes = map_boxes(*(np.array(theirs[c]) for c in ("xmin", "ymin", "xmax", "ymax")), profile["transform"])
    bounds = ours.geometry.bounds
    our_boxes = bounds[["minx", "miny", "maxx", "maxy"]].to_numpy() - np.array([profile["transform"].c, profile["transform"].f] * 2)
    result = compare_detections(
        (torch.from_numpy(our_boxes), torch.from_numpy(ours["score"].to_numpy()), torch.zeros(len(ours), dtype=torch.long)),
        (torch.from_numpy(their_boxes), torch.tensor(theirs["score"]), torch.zeros(len(their_boxes), dtype=torch.long)),
        min_iou=0.999, score_atol=1e-4,
    )  # fmt: skip
    assert result["count"][0] == result["count"][1] == result["matched"], result
