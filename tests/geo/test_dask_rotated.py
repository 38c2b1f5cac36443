"""
A model of rotated boxes (XYWHA) on Dask (retina_plugin/geo/blocks.py, parts.py, dask_predict.py):
its blocks keep 5-column boxes, its parts hold them exactly with their polygons in the raster's
CRS, and the blocks merged across their seams by rotated NMS give the single-process run's
detections; so does predict_raster on a LocalCluster of one worker.
"""
import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from detectron2.modeling import build_model

from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.compare import compare_detections
from retina_plugin.geo.blocks import detect_block, merge_blocks, raster_blocks
from retina_plugin.geo.parts import read_part, write_part
from retina_plugin.geo.predict import RasterPredictor, predict_rasters
from retina_plugin.geo.scenes import write_shapes_scene
from retina_plugin.ops import rotated_box_corners
from retina_plugin.weights.checkpoint import RetinaCheckpointer
from test_rotated_predict_raster import CRS, RASTER_OPTS, same_ring, to_map
from tool_runs import BASE_CONFIG

# 256 px in windows of 128 sharing 32: 3 x 3 windows; blocks of 2 x 2 windows: 4 blocks, their seams
# at the windows' overlaps x, y in [96, 128).
SIZE, TILE, OVERLAP, BLOCK = 256, 128, 0.25, 2


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """A rotated random-weight model saved as a checkpoint (each Dask worker loads the same weights), its config, a raster."""
    root = tmp_path_factory.mktemp("rotated_dask")
    cfg, _ = raster_config(BASE_CONFIG, RASTER_OPTS, tile=TILE, overlap=OVERLAP)
    torch.manual_seed(0)
    RetinaCheckpointer(build_model(cfg), str(root)).save("model")
    cfg, _ = raster_config(BASE_CONFIG, [*RASTER_OPTS, "MODEL.WEIGHTS", str(root / "model.pth")], tile=TILE, overlap=OVERLAP)
    scene = write_shapes_scene(str(root / "scene.tif"), SIZE, seed=3)
    return cfg, scene.path, root


def same_detections(candidate, reference):
    """compare_detections of (boxes, scores, classes) numpy triples: rotated IoU >= 0.999, scores within 1e-4, no tie."""
    as_tensors = [tuple(torch.as_tensor(a) for a in d) for d in (candidate, reference)]
    result = compare_detections(*as_tensors, min_iou=0.999, score_atol=1e-4)
    assert result["match"] and result["ties"] == 0 and result["matched"] == len(reference[1]) == len(candidate[1]), result
    return result


def test_rotated_blocks_and_parts_merge_into_the_one_process_detections(rotated, tmp_path, single_thread):
    cfg, path, _ = rotated
    predictor = RasterPredictor(cfg)
    whole = predictor.predict(path, progress=False)
    assert whole.boxes.shape[1] == 5 and len(whole.boxes) > 9
    parts = []
    with predictor.open(path) as source:
        transform, crs = source.transform, source.crs

        def read(*window):
            return torch.from_numpy(source.read(*window))

        for i, tiles in enumerate(raster_blocks(SIZE, SIZE, TILE, OVERLAP, BLOCK)):
            block = detect_block(predictor.tiled, read, SIZE, SIZE, tiles)
            write_part(str(tmp_path / f"b{i}.parquet"), block, {"block": i}, transform, crs)
            part = read_part(str(tmp_path / f"b{i}.parquet"))
            assert part["boxes"].shape == block["boxes"].shape and part["boxes"].shape[1] == 5
            assert np.array_equal(part["boxes"], block["boxes"]) and np.array_equal(part["tile"], block["tile"])
            parts.append(part)
    assert len(parts) == 4
    frame = gpd.read_parquet(tmp_path / "b0.parquet")
    assert list(frame.columns[:5]) == ["cx", "cy", "w", "h", "angle"]
    assert frame.crs == rasterio.crs.CRS.from_string(CRS)
    for polygon, corners in zip(frame.geometry.values, rotated_box_corners(torch.as_tensor(parts[0]["boxes"], dtype=torch.float64)).numpy()):
        assert same_ring(polygon, to_map(corners))  # x = 500000 + 0.1 col, y = 5400000 - 0.1 row

    tiled = predictor.tiled
    merged = merge_blocks(parts, tiled.nms_thresh, tiled.detections_per_image, merge=tiled.merge)
    # The blocks' seams were merged: boxes kept by two blocks' tiles came out once.
    assert sum(len(p["scores"]) for p in parts) > len(merged["scores"])
    same_detections((merged["boxes"], merged["scores"], merged["classes"]), (whole.boxes, whole.scores, whole.classes))


# 17 s on the 2 shared cores (a worker process starts and loads the model): with the slow tests.
# The default run checks the same blocks, parts and merge in one process (the test above).
@pytest.mark.slow
def test_predict_raster_with_a_rotated_model_on_a_local_cluster_equals_one_process(rotated, tmp_path, single_thread):
    from retina_plugin.geo.dask_predict import predict_rasters_on_dask

    cfg, path, _ = rotated
    (one,) = predict_rasters(cfg, [path], str(tmp_path / "one.gpkg"), str(tmp_path / "one.json"), progress=False)
    out = tmp_path / "dask.gpkg"
    (many,) = predict_rasters_on_dask(cfg, [path], str(out), str(tmp_path / "dask.json"), progress=False,
                                      workers=1, threads_per_worker=1, block_windows=BLOCK)  # fmt: skip
    same_detections((many.boxes, many.scores, many.classes), (one.boxes, one.scores, one.classes))
    settings = json.loads((tmp_path / "dask.gpkg.parts" / "settings.json").read_text())
    assert settings["part boxes"] == "cx, cy, w, h, angle"
    assert len(list((tmp_path / "dask.gpkg.parts").glob("*.parquet"))) == 4
    # The written outputs: the same polygons in the raster's CRS and the same XYWHA COCO boxes.
    ours, theirs = gpd.read_file(out), gpd.read_file(tmp_path / "one.gpkg")
    assert ours.crs == theirs.crs == rasterio.crs.CRS.from_string(CRS) and len(ours) == len(theirs) > 9
    for polygon in ours.geometry.values:  # each one's twin: polygon IoU >= 0.999
        assert max(polygon.intersection(b).area / polygon.union(b).area for b in theirs.geometry.values) >= 0.999
    coco = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("dask", "one")]
    assert all(len(r["bbox"]) == 5 for r in coco[0]) and len(coco[0]) == len(coco[1])
