"""
Datasets cut from a raster and its vectors (retina_plugin.geo.dataset), their windows read by
RetinaDatasetMapper, and tools/train_net.py --train-raster on them.
"""
import argparse
import logging
import math
import re

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from detectron2.data import DatasetCatalog, MetadataCatalog
from rasterio.windows import Window

from retina_plugin import load_config
from retina_plugin.config import ConfigError
from retina_plugin.data.mapper import ImageReadError, RetinaDatasetMapper
from retina_plugin.cli.arguments import user_dataset_opts
from retina_plugin.geo.dataset import raster_dataset_dicts
from retina_plugin.data.raster import RasterError
from retina_plugin.geo.scenes import write_shapes_scene
from retina_plugin.geo.vectors import VectorError, boxes_to_polygons
from retina_plugin.inference.tiles import tile_grid
from tool_runs import BASE_CONFIG, QUICK_OPTS, SMALL_MODEL_OPTS, read_metrics, run_tool

# 640 px, a 128 px nodata frame, 3 x 3 blocks of 128 px holding the objects, 4 bands (R, G, B, NIR).
SIZE, BORDER, BLOCK = 640, 128, 128


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    return write_shapes_scene(str(root / "scene.tif"), SIZE, block=BLOCK, bands=4, border=BORDER, vectors=str(root / "objects.gpkg"))


def _cut(scene, tile_size, overlap, **kwargs):
    return raster_dataset_dicts(scene.path, scene.path.replace("scene.tif", "objects.gpkg"), tile_size, overlap, num_channels=4, **kwargs)


def _boxes(d):
    return np.array([a["bbox"] for a in d["annotations"]]).reshape(-1, 4)


def test_tiles_aligned_with_the_blocks_hold_each_object_once_whole(scene):
    dicts = _cut(scene, BLOCK, 0.0)
    # 5 x 5 tiles, the 16 of the frame all nodata: one tile per block.
    assert len(tile_grid(SIZE, SIZE, BLOCK, 0.0)) == 25 and len(dicts) == 9
    assert sum(len(d["annotations"]) for d in dicts) == len(scene.boxes)
    for d in dicts:
        x0, y0, x1, y1 = d["raster_window"]
        assert (d["height"], d["width"], d["file_name"], d["raster_bands"]) == (y1 - y0, x1 - x0, scene.path, [1, 2, 3, 4])
        inside = (scene.boxes[:, 0] >= x0) & (scene.boxes[:, 2] <= x1) & (scene.boxes[:, 1] >= y0) & (scene.boxes[:, 3] <= y1)
        assert np.array_equal(_boxes(d), scene.boxes[inside] - [x0, y0, x0, y0])
        assert [a["category_id"] for a in d["annotations"]] == scene.classes[inside].tolist()
    assert [d["image_id"] for d in dicts] == list(range(9))


@pytest.mark.parametrize("tile_size, overlap", [(160, 0.0), (200, 0.25)])
def test_a_box_goes_to_every_tile_holding_more_than_half_of_it_clipped(scene, tile_size, overlap):
    dicts = _cut(scene, tile_size, overlap)
    tiles = tile_grid(SIZE, SIZE, tile_size, overlap).tolist()
    inner = (BORDER, SIZE - BORDER)
    touching = [t for t in tiles if t[0] < inner[1] and t[2] > inner[0] and t[1] < inner[1] and t[3] > inner[0]]
    assert [d["raster_window"] for d in dicts] == [tuple(t) for t in touching]
    for d, (x0, y0, x1, y1) in zip(dicts, touching):
        expected = []
        for bx0, by0, bx1, by1 in scene.boxes.tolist():
            cx0, cy0, cx1, cy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
            if cx1 > cx0 and cy1 > cy0 and (cx1 - cx0) * (cy1 - cy0) > 0.5 * (bx1 - bx0) * (by1 - by0):
                expected.append([cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0])
        assert _boxes(d).tolist() == expected
    if overlap == 0.0:  # 160 divides 640: the tiles partition the raster, so a box is in at most one
        whole = sum(
            any(t[0] <= b[0] and b[2] <= t[2] and t[1] <= b[1] and b[3] <= t[3] for t in tiles) for b in scene.boxes.tolist()
        )
        cut = len(scene.boxes) - whole
        total = sum(len(d["annotations"]) for d in dicts)
        assert cut > 0 and whole <= total <= len(scene.boxes)


def test_vectors_in_another_crs_give_the_same_boxes(scene, tmp_path):
    vectors = tmp_path / "objects_4326.geojson"
    gpd.read_file(scene.path.replace("scene.tif", "objects.gpkg")).to_crs("EPSG:4326").to_file(vectors, driver="GeoJSON")
    ours = _cut(scene, 200, 0.25)
    theirs = raster_dataset_dicts(scene.path, str(vectors), 200, 0.25, num_channels=4)
    assert [len(d["annotations"]) for d in theirs] == [len(d["annotations"]) for d in ours]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(_boxes(b), _boxes(a), atol=0.01)


def test_vectors_without_crs_are_in_the_rasters_and_a_raster_without_crs_takes_pixel_coordinates(scene, tmp_path, caplog):
    frame = gpd.read_file(scene.path.replace("scene.tif", "objects.gpkg"))
    frame.set_crs(None, allow_override=True).to_file(tmp_path / "no_crs.gpkg")
    with caplog.at_level(logging.WARNING, logger="retina_plugin.geo.dataset"):
        dicts = raster_dataset_dicts(scene.path, str(tmp_path / "no_crs.gpkg"), BLOCK, 0.0, num_channels=4)
    assert "the vectors have no CRS; taken to be in the raster's" in caplog.text
    assert sum(len(d["annotations"]) for d in dicts) == len(scene.boxes)

    plain = write_shapes_scene(str(tmp_path / "plain.tif"), 256, crs=None)
    pixels = gpd.GeoDataFrame({"label": [plain.class_names[k] for k in plain.classes]},
                              geometry=boxes_to_polygons(plain.boxes, Affine.identity()))  # fmt: skip
    pixels.to_file(tmp_path / "pixels.gpkg")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retina_plugin.geo.dataset"):
        dicts = raster_dataset_dicts(plain.path, str(tmp_path / "pixels.gpkg"), 256, 0.0)
    assert "the raster has no CRS; the coordinates of" in caplog.text
    assert np.array_equal(_boxes(dicts[0]), plain.boxes)


def _mapper_cfg(*opts):
    return load_config(BASE_CONFIG, SMALL_MODEL_OPTS + [
        "MODEL.PIXEL_MEAN", [103.5, 116.3, 123.7, 120.0], "MODEL.PIXEL_STD", [57.4, 57.1, 58.4, 57.0],
        "INPUT.RANDOM_FLIP", "none", *opts,
    ])  # fmt: skip


def test_mapper_reads_the_window_in_bgr_nir_order(scene):
    d = _cut(scene, BLOCK, 0.0)[4]
    x0, y0, x1, y1 = d["raster_window"]
    with rasterio.open(scene.path) as src:
        bgrn = src.read([3, 2, 1, 4], window=Window(x0, y0, x1 - x0, y1 - y0)).astype(np.float32)
    native = RetinaDatasetMapper(_mapper_cfg("INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 128), is_train=True)(d)
    assert native["image"].shape == (4, 128, 128) and native["image"].dtype == torch.float32
    assert torch.equal(native["image"], torch.from_numpy(bgrn))
    assert torch.equal(native["instances"].gt_boxes.tensor, torch.tensor(_boxes(d), dtype=torch.float32))
    # Resized, every channel alike: the scene's NIR is 255 - green before and after (PIL would
    # have premultiplied B, G, R by the fourth channel as by an alpha).
    resized = RetinaDatasetMapper(_mapper_cfg("INPUT.MIN_SIZE_TRAIN", (200,), "INPUT.MAX_SIZE_TRAIN", 200), is_train=True)(d)
    assert resized["image"].shape == (4, 200, 200)
    torch.testing.assert_close(resized["image"][3], 255 - resized["image"][1], atol=1e-3, rtol=0)
    with pytest.raises(ImageReadError) as e:
        RetinaDatasetMapper(_mapper_cfg(), is_train=False, dataset_name="frame")(dict(d, raster_window=(0, 0, 128, 128)))
    assert _one_line(e).startswith(f"dataset 'frame': cannot read window (0, 0, 128, 128) of raster {scene.path}: every pixel of the window is nodata")


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


def test_errors_name_the_file_and_the_value(scene, tmp_path):
    vectors = scene.path.replace("scene.tif", "objects.gpkg")
    far = tmp_path / "far.gpkg"
    frame = gpd.read_file(vectors)
    frame.set_geometry(frame.geometry.translate(5000.0, 0.0)).to_file(far)
    with pytest.raises(VectorError) as e:
        raster_dataset_dicts(scene.path, str(far), 128, 0.0, num_channels=4)
    assert re.search(rf"{far}: none of its {len(frame)} features overlaps the raster {scene.path} ", _one_line(e))
    with pytest.raises(RasterError) as e:
        raster_dataset_dicts(str(tmp_path / "missing.tif"), vectors, 128, 0.0)
    assert _one_line(e).startswith(f"{tmp_path / 'missing.tif'}: cannot read raster")
    with pytest.raises(VectorError) as e:
        raster_dataset_dicts(scene.path, str(tmp_path / "missing.gpkg"), 128, 0.0, num_channels=4)
    assert _one_line(e).startswith(f"{tmp_path / 'missing.gpkg'}: cannot read vectors")
    with pytest.raises(RasterError) as e:
        raster_dataset_dicts(scene.path, vectors, 128, 0.0, bands=[1, 2, 5], num_channels=3)
    assert _one_line(e) == f"{scene.path}: band 5 out of range: the raster has 4 band(s), 1..4"
    with pytest.raises(VectorError) as e:
        raster_dataset_dicts(scene.path, vectors, 128, 0.0, num_channels=4, class_names=["circle", "square"])
    assert _one_line(e) == f"{vectors}: label(s) 'triangle' of column 'label' are not among the training classes ['circle', 'square']"
    args = argparse.Namespace(train_json=None, train_images=None, test_json=None, test_images=None,
                              train_raster=scene.path, train_vectors=None, test_raster=None, test_vectors=None)  # fmt: skip
    with pytest.raises(ConfigError, match=f"^--train-raster and --train-vectors go together \\(got '{scene.path}', None\\)$"):
        user_dataset_opts(args)


def test_flags_register_both_splits_with_the_training_classes(scene, tmp_path, caplog):
    vectors = scene.path.replace("scene.tif", "objects.gpkg")
    frame = gpd.read_file(vectors)
    frame[frame.label != "square"].to_file(tmp_path / "no_squares.gpkg")  # the test split lacks a class
    args = argparse.Namespace(
        config_file=BASE_CONFIG, opts=["MODEL.PIXEL_MEAN", "[1, 2, 3, 4]", "MODEL.PIXEL_STD", "[1, 1, 1, 1]",
                                       "MODEL.RETINA_PLUGIN.TILE_SIZE", "128", "MODEL.RETINA_PLUGIN.TILE_OVERLAP", "0.0"],
        train_json=None, train_images=None, test_json=None, test_images=None, label_column=None,
        train_raster=scene.path, train_vectors=vectors, test_raster=scene.path, test_vectors=str(tmp_path / "no_squares.gpkg"),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="retina_plugin.cli.arguments"):
        opts = user_dataset_opts(args)
    assert opts == ["DATASETS.TRAIN", ("raster_train_scene",), "MODEL.RETINANET.NUM_CLASSES", 3, "DATASETS.TEST", ("raster_test_scene",)]
    assert "raster tiles are 128 px but INPUT.MIN_SIZE_TRAIN (800,), MAX_SIZE_TRAIN 1333 resize them" in caplog.text
    assert MetadataCatalog.get("raster_test_scene").thing_classes == ["circle", "square", "triangle"]
    test_ids = {a["category_id"] for d in DatasetCatalog.get("raster_test_scene") for a in d["annotations"]}
    assert test_ids == {0, 2}
    assert MetadataCatalog.get("raster_train_scene").evaluator_type == "coco"


def test_train_net_trains_and_evaluates_on_raster_tiles(tmp_path):
    train = write_shapes_scene(str(tmp_path / "train.tif"), 512, bands=4, border=64, vectors=str(tmp_path / "train.gpkg"))
    write_shapes_scene(str(tmp_path / "val.tif"), 384, bands=4, seed=1, vectors=str(tmp_path / "val.geojson"))
    out = tmp_path / "run"
    proc = run_tool(
        "tools/train_net.py", "--config-file", BASE_CONFIG,
        "--train-raster", train.path, "--train-vectors", str(tmp_path / "train.gpkg"),
        "--test-raster", str(tmp_path / "val.tif"), "--test-vectors", str(tmp_path / "val.geojson"),
        *SMALL_MODEL_OPTS, *QUICK_OPTS, "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out),
        "MODEL.PIXEL_MEAN", "[103.5, 116.3, 123.7, 120.0]", "MODEL.PIXEL_STD", "[57.4, 57.1, 58.4, 57.0]",
        "MODEL.RETINA_PLUGIN.TILE_SIZE", "128", "MODEL.RETINA_PLUGIN.TILE_OVERLAP", "0.0", "INPUT.MIN_SIZE_TEST", "0",
        # 3 iterations from random weights score every anchor about 0.01 (the prior): keep them, so AP is a number.
        "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    train_losses = [m["total_loss"] for m in read_metrics(out) if "total_loss" in m]
    assert train_losses and all(math.isfinite(v) for v in train_losses)
    evaluation = [m for m in read_metrics(out) if "bbox/AP" in m][-1]
    assert math.isfinite(evaluation["bbox/AP"]), evaluation
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    # 4 x 4 tiles of 128 px, the 64 px frame all nodata in none of them; 3 x 3 of the val raster.
    coco = (out / "inference" / "raster_test_val" / "raster_test_val_coco_format.json").read_text()
    assert coco.count('"file_name"') == 9
