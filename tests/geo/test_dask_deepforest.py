"""
DeepForest's way of predicting (docs/deepforest.md: each window resized before the network,
TILE_RESIZE; one NMS over the boxes of all windows, TILE_MERGE "deepforest") on Dask:
tools/predict_raster.py --workers 2 gives the single-process run's detections, each once.
"""
import glob

import pytest

from dask_runs import detection_set, run_predict_raster
from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.geo.parts import read_part
from retina_plugin.geo.predict import predict_rasters
from retina_plugin.geo.scenes import write_shapes_scene

TILE, OVERLAP, SCORE, BLOCK = 128, 0.25, 0.5, 3
# 640 px: 7 x 7 windows in blocks of 3 x 3 (3 + 3 + 1 a side: 9 blocks of unequal sizes); 320 px: 3 x 3, one block.
SIZES, NUM_PARTS = (640, 320), 10
DEEPFOREST_OPTS = ["MODEL.RETINA_PLUGIN.TILE_RESIZE", "[192, 1333]", "MODEL.RETINA_PLUGIN.TILE_MERGE", "deepforest",
                   "MODEL.RETINA_PLUGIN.TILE_NMS_THRESH", "0.15"]  # fmt: skip


# A minute on the 2 shared cores: with the slow tests. The default run checks the same merge in
# one process (test_dask_predict.py::test_blocks_merged_equal_tiled_inference_over_the_raster[2-deepforest]).
@pytest.mark.slow
def test_deepforest_resize_and_mosaic_on_dask_equal_one_process(trained, tmp_path, single_thread):
    paths = [write_shapes_scene(str(tmp_path / f"scene_{size}.tif"), size, seed=30 + size, single_class=True).path for size in SIZES]
    opts = ["MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", str(SCORE), *DEEPFOREST_OPTS]
    cfg, _ = raster_config(trained.config_file, opts, tile=TILE, overlap=OVERLAP)
    reference = tmp_path / "one.gpkg"
    predict_rasters(cfg, paths, str(reference), progress=False)

    out = tmp_path / "dask.gpkg"
    proc = run_predict_raster(
        "--config-file", trained.config_file, "--input", *paths, "--output", out, "--tile", TILE, "--overlap", OVERLAP,
        "--workers", 2, "--block-windows", BLOCK, "--no-progress", "--opts", *opts,
    )  # fmt: skip
    assert f"0 of {NUM_PARTS} parts already done" in proc.stdout

    expected = detection_set(reference)
    assert len(expected) > 20
    assert detection_set(out) == expected
    parts = [read_part(p) for p in glob.glob(f"{out}.parts/*.parquet")]
    assert len(parts) == NUM_PARTS and {p["attrs"]["tile_merge"] for p in parts} == {"deepforest"}
    # The mosaic NMS ran at the merge, over the windows of all blocks: it removed boxes the parts hold.
    assert sum(len(p["scores"]) for p in parts) > len(expected)
