"""
tools/predict_raster.py's GeoParquet output (`.parquet`): the one-process run and the Dask run
write the rows of the `.gpkg` output (geometry, score, label, class_id, source) in its CRS;
`read_vectors` reads it back, so tools/evaluate_raster.py scores it as it scores the `.gpkg`.
"""
import json
import shutil

import geopandas as gpd
import pandas as pd
import pytest

from dask_runs import detection_set, run_predict_raster
from retina_plugin.cli.evaluate_raster import main as evaluate_raster
from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.geo.predict import predict_rasters
from retina_plugin.geo.scenes import SCENE_CRS, write_shapes_scene
from retina_plugin.geo.vectors import VectorError, read_vectors

TILE, OVERLAP, SCORE, BLOCK = 128, 0.25, 0.5, 2
# 384 px: 4 x 4 windows, 4 blocks of 2 x 2 each.
SIZE, NUM_PARTS = 384, 8
RECALL = 0.5  # of the tiny detector on the first scene at IoU 0.5


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two generated scenes; the first one's objects as ground truth (truth.gpkg)."""
    root = tmp_path_factory.mktemp("scenes")
    truth = str(root / "truth.gpkg")
    return [write_shapes_scene(str(root / f"scene_{i}.tif"), SIZE, seed=40 + i, single_class=True, vectors=None if i else truth).path for i in range(2)], truth


@pytest.fixture(scope="module")
def one_process(trained, scenes, tmp_path_factory):
    """The one-process run over both scenes, written as .gpkg and as .parquet."""
    cfg, _ = raster_config(trained.config_file, ["MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", SCORE], tile=TILE, overlap=OVERLAP)
    root = tmp_path_factory.mktemp("one_process")
    for output in ("dets.gpkg", "dets.parquet"):
        predict_rasters(cfg, scenes[0], str(root / output), progress=False)
    return root / "dets.gpkg", root / "dets.parquet"


def rows(frame):
    return list(zip(frame.geometry.to_wkb(), frame.score, frame.label, frame.class_id, frame.source))


def assert_same_rows(parquet, gpkg):
    ours, label = read_vectors(str(parquet))
    theirs = gpd.read_file(gpkg)
    assert label == "label"
    assert list(ours.columns) == list(theirs.columns) == ["score", "label", "class_id", "source", "geometry"]
    assert ours.crs == theirs.crs == SCENE_CRS
    assert len(ours) > 20
    assert rows(ours) == rows(theirs)


def test_one_process_parquet_holds_the_gpkg_rows(one_process, scenes, tmp_path):
    gpkg, parquet = one_process
    assert_same_rows(parquet, gpkg)
    assert set(gpd.read_parquet(parquet).source) == set(scenes[0])


# With the slow tests (the suite's 15 minutes): both paths write through geo.predict.write_outputs,
# which test_one_process_parquet_holds_the_gpkg_rows checks; test_dask_predict.py the Dask merge.
@pytest.mark.slow
def test_dask_parquet_holds_the_gpkg_rows(trained, scenes, one_process, tmp_path):
    def predict(output):
        return run_predict_raster(
            "--config-file", trained.config_file, "--input", *scenes[0], "--output", output, "--tile", TILE,
            "--overlap", OVERLAP, "--workers", 1, "--block-windows", BLOCK, "--no-progress",
            "--opts", "MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", SCORE,
        )  # fmt: skip

    parquet, gpkg = tmp_path / "dets.parquet", tmp_path / "dets.gpkg"
    assert f"0 of {NUM_PARTS} parts already done" in predict(parquet).stdout
    # The same parts merged into a .gpkg: the same command with that output, its parts folder a copy.
    shutil.copytree(f"{parquet}.parts", f"{gpkg}.parts")
    assert f"{NUM_PARTS} of {NUM_PARTS} parts already done in {gpkg}.parts; running 0" in predict(gpkg).stdout
    assert_same_rows(parquet, gpkg)
    assert detection_set(parquet) == detection_set(one_process[0])


def test_evaluate_raster_scores_the_parquet_as_the_gpkg(one_process, scenes, tmp_path):
    # The rasters come from the `source` column; the ground truth is the first scene's objects.
    results = []
    for predictions in one_process:
        out = tmp_path / predictions.suffix[1:]
        evaluate_raster(["--predictions", str(predictions), "--ground-truth", scenes[1], "--class-agnostic", "--output-dir", str(out)])
        results.append(json.loads((out / "evaluation.json").read_text()))
        assert results[-1].pop("predictions") == str(predictions)
    assert results[0] == results[1]
    assert [r["raster"] for r in results[0]["rasters"]] == scenes[0]
    assert results[0]["rasters"][0]["iou"]["0.5"]["recall"] > RECALL


def test_a_parquet_file_that_is_not_geoparquet_is_one_line(tmp_path):
    path = tmp_path / "table.parquet"
    pd.DataFrame({"score": [0.5]}).to_parquet(path)
    with pytest.raises(VectorError, match=rf"^{path}: cannot read vectors: "):
        read_vectors(str(path))
