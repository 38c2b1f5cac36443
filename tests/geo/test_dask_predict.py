"""
tools/predict_raster.py on Dask (retina_plugin/geo/dask_predict.py), real processes on loopback:
a LocalCluster of 2 workers over 8 generated GeoTIFFs (one split into 16 blocks) gives the
single-process run's detections, each exactly once; so does a run in which one worker is
SIGKILLed mid-task, and a run whose client is SIGKILLed, rerun: the rerun runs only the parts
that were not finished. A rerun with another score threshold is refused, naming the key; the
single-process run imports nothing of Dask.
"""
import glob
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.data.raster import RasterError
from retina_plugin.geo.blocks import detect_block, merge_blocks, raster_blocks
from retina_plugin.geo.inputs import raster_paths
from retina_plugin.geo.predict import RasterPredictor, predict_rasters
from retina_plugin.geo.scenes import write_shapes_scene
from retina_plugin.inference.tiles import tile_grid
from dask_runs import detection_set
from tool_runs import REPO, ROTATED_OPTS

TILE, OVERLAP, SCORE, BLOCK = 128, 0.25, 0.5, 4
LARGE, SMALL, NUM_SMALL = 1280, 320, 7
# 13 x 13 windows in blocks of 4 x 4: 16 blocks; each small raster (3 x 3 windows) is one.
NUM_PARTS = 16 + NUM_SMALL


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    root = tmp_path_factory.mktemp("rasters")
    paths = [write_shapes_scene(str(root / "large.tif"), LARGE, border=256, seed=5, single_class=True).path]
    for i in range(NUM_SMALL):
        paths.append(write_shapes_scene(str(root / f"small_{i}.tif"), SMALL, seed=10 + i, single_class=True).path)
    listing = root / "rasters.txt"
    listing.write_text("# the scenes\n" + "".join(os.path.basename(p) + "\n" for p in paths))
    return str(listing), paths


@pytest.fixture(scope="module")
def reference(trained, rasters, tmp_path_factory):
    """The single-process run's detections, as a set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg, _ = raster_config(trained.config_file, ["MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", SCORE], tile=TILE, overlap=OVERLAP)
    out = tmp_path_factory.mktemp("reference") / "reference.gpkg"
    predict_rasters(cfg, rasters[1], str(out), progress=False)
    torch.set_num_threads(threads)
    return detection_set(out)


def tool_command(trained, listing, output, *extra, score=SCORE, progress=False):
    return [
        sys.executable, str(REPO / "tools" / "predict_raster.py"), "--config-file", trained.config_file,
        "--input", listing, "--output", str(output), "--tile", str(TILE), "--overlap", str(OVERLAP),
        "--workers", "2", "--block-windows", str(BLOCK), *([] if progress else ["--no-progress"]), *extra,
        "--opts", "MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", str(score),
    ]  # fmt: skip


def tool_env(pause=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if pause:
        env["RETINA_TEST_PAUSE_PART"] = str(pause)
    return env


def run(command, pause=None, check=True):
    proc = subprocess.run(command, cwd=REPO, env=tool_env(pause), capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def parts_of(output):
    return sorted(glob.glob(f"{output}.parts/*.parquet"))


def temporaries_of(output):
    return sorted(glob.glob(f"{output}.parts/.*.partial-*"))


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def writer_pid(temporary):
    return int(temporary.rsplit("-", 1)[1])


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_blocks_hold_every_window_once():
    blocks = raster_blocks(LARGE, LARGE, TILE, OVERLAP, BLOCK)
    assert len(blocks) == 16
    assert sorted(i for b in blocks for i in b) == list(range(len(tile_grid(LARGE, LARGE, TILE, OVERLAP))))
    assert raster_blocks(SMALL, SMALL, TILE, OVERLAP, BLOCK) == [list(range(9))]


def test_two_workers_equal_one_process(trained, rasters, reference, tmp_path):
    out = tmp_path / "dets.gpkg"
    proc = run(tool_command(trained, rasters[0], out, progress=True))
    windows = 169 + NUM_SMALL * 9
    assert re.search(rf"rasters: 100%.*\b{windows}/{windows} \[", proc.stderr)  # one bar over all windows
    assert f"0 of {NUM_PARTS} parts already done" in proc.stdout and f"running {NUM_PARTS}" in proc.stdout
    assert len(parts_of(out)) == NUM_PARTS and not temporaries_of(out)
    assert re.search(r"large\.tif\s+169\s+\d+\s+[\d.]+\s+\d+", proc.stdout)  # the per-raster table
    assert len(reference) > 100
    assert detection_set(out) == reference


def test_a_killed_worker_task_runs_again_elsewhere(trained, rasters, reference, tmp_path):
    out, pause = tmp_path / "dets.gpkg", tmp_path / "pause"
    pause.touch()
    proc = subprocess.Popen(tool_command(trained, rasters[0], out), cwd=REPO, env=tool_env(pause), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Both workers hold a written, not yet renamed part: kill one of them there.
        wait_for(lambda: len(temporaries_of(out)) >= 2, "both workers to write a part")
        victim = writer_pid(temporaries_of(out)[0])
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: process_gone(victim), "the worker to die")
        pause.unlink()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"{stdout[-3000:]}\n{stderr[-6000:]}"
    assert len(parts_of(out)) == NUM_PARTS and not temporaries_of(out)
    assert detection_set(out) == reference


def test_killed_client_rerun_runs_only_unfinished_parts_and_other_settings_are_refused(trained, rasters, reference, tmp_path):
    out, pause = tmp_path / "dets.gpkg", tmp_path / "pause"
    pause.touch()
    proc = subprocess.Popen(tool_command(trained, rasters[0], out), cwd=REPO, env=tool_env(pause), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(temporaries_of(out)) >= 1, "a worker to write a part")
        pause.unlink()
        wait_for(lambda: len(parts_of(out)) >= 3, "three finished parts")
        pause.touch()  # the next parts wait before their rename
        wait_for(lambda: len(temporaries_of(out)) >= 1, "a worker to wait")
        workers = {writer_pid(t) for t in temporaries_of(out)}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: all(process_gone(pid) for pid in workers), "the workers to exit with their client")
    finally:
        proc.kill()
    finished = len(parts_of(out))
    assert 3 <= finished < NUM_PARTS and not out.exists()
    pause.unlink()
    rerun = run(tool_command(trained, rasters[0], out))
    assert f"{finished} of {NUM_PARTS} parts already done" in rerun.stdout
    assert f"running {NUM_PARTS - finished}" in rerun.stdout
    assert len(parts_of(out)) == NUM_PARTS and not temporaries_of(out)
    assert detection_set(out) == reference

    refused = run(tool_command(trained, rasters[0], out, score=0.6), check=False)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]  # after the imports' warnings, if any
    assert [line for line in refused.stderr.splitlines() if "error:" in line] == [last]
    assert last.startswith(f"predict_raster: error: {out}.parts holds parts of a run with other settings: ")
    assert "MODEL.RETINANET.SCORE_THRESH_TEST was 0.5, now 0.6;" in last
    assert len(parts_of(out)) == NUM_PARTS


def test_the_single_process_run_imports_no_dask(trained, rasters, tmp_path):
    out = tmp_path / "one.geojson"
    code = (
        "import runpy, sys; main = runpy.run_path('tools/predict_raster.py')['main']; main(sys.argv[1:]); "
        "print('DASK' if {'dask', 'distributed'} & set(sys.modules) else 'NO DASK')"
    )
    args = [
        "--config-file", trained.config_file, "--input", rasters[1][1], "--output", str(out), "--tile", str(TILE),
        "--no-progress", "--opts", "MODEL.WEIGHTS", trained.weights,
    ]  # fmt: skip
    proc = run([sys.executable, "-c", code, *args])
    assert proc.stdout.strip().splitlines()[-1] == "NO DASK" and out.exists()


def test_inputs_folder_glob_list_and_stac(rasters, tmp_path):
    listing, paths = rasters
    folder = os.path.dirname(listing)
    assert raster_paths([listing]) == paths
    assert raster_paths([os.path.join(folder, "small_*.tif")]) == sorted(paths[1:])
    stac = tmp_path / "items.json"
    items = [{"type": "Feature", "id": f"s{i}", "assets": {"image": {"href": p, "type": "image/tiff; application=geotiff"},
              "thumbnail": {"href": "thumb.png", "type": "image/png"}}} for i, p in enumerate(paths[:2])]  # fmt: skip
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    assert raster_paths([str(stac)]) == paths[:2]
    items[0]["assets"]["image"]["href"] = "https://example.com/a.tif"
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    with pytest.raises(RasterError, match=r"items.json: item 's0' asset 'image' is at 'https://example.com/a.tif'; only local files"):
        raster_paths([str(stac)])
    with pytest.raises(RasterError, match=r"nothing_\*.tif: the pattern matches no file"):
        raster_paths([os.path.join(folder, "nothing_*.tif")])


# DeepForest's way (docs/deepforest.md): each window resized before the network, one NMS over all windows.
DEEPFOREST_OPTS = ["MODEL.RETINA_PLUGIN.TILE_RESIZE", "[192, 1333]", "MODEL.RETINA_PLUGIN.TILE_MERGE", "deepforest", "MODEL.RETINA_PLUGIN.TILE_NMS_THRESH", 0.15]


@pytest.mark.parametrize("block_windows, tiling", [(1, []), (5, []), (2, DEEPFOREST_OPTS)], ids=["1-edges", "5-edges", "2-deepforest"])
def test_blocks_merged_equal_tiled_inference_over_the_raster(trained, rasters, block_windows, tiling, single_thread):
    """
    Blocks of 1 window (every seam a block seam) and of 5 (blocks of unequal sizes) merge into the
    windowed run's detections; so do blocks of DeepForest's resized windows merged by its mosaic NMS.
    """
    opts = ["MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", SCORE, *tiling]
    cfg, _ = raster_config(trained.config_file, opts, tile=TILE, overlap=OVERLAP)
    predictor = RasterPredictor(cfg)
    path, size = (rasters[1][0], LARGE) if not tiling else (rasters[1][1], SMALL)
    whole = predictor.predict(path, progress=False)
    with predictor.open(path) as source:

        def read(*window):
            tile = source.read(*window)
            return None if tile is None else torch.from_numpy(tile)

        blocks = [detect_block(predictor.tiled, read, size, size, b) for b in raster_blocks(size, size, TILE, OVERLAP, block_windows)]
    assert sum(b["skipped"] for b in blocks) == whole.windows_skipped
    tiled = predictor.tiled
    merged = merge_blocks(blocks, tiled.nms_thresh, 0, merge=tiled.merge)
    assert len(merged["scores"]) == len(whole.scores) > (100 if not tiling else 10)
    order, expected = np.lexsort(merged["boxes"].T), np.lexsort(whole.boxes.T)
    np.testing.assert_allclose(merged["boxes"][order], whole.boxes[expected], atol=1e-4)
    np.testing.assert_allclose(merged["scores"][order], whole.scores[expected], atol=1e-5)
    if tiling:  # the mosaic NMS ran: boxes cut to whole pixels, those windows share removed
        assert np.array_equal(merged["boxes"], np.trunc(merged["boxes"]))
        assert sum(len(b["scores"]) for b in blocks) > len(merged["scores"])
    else:
        assert whole.windows_skipped > 0


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--threads-per-worker", "2"], "--threads-per-worker is a setting of a run on Dask: add --workers N or --scheduler ADDRESS"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "--workers starts a cluster, --scheduler uses a running one: give one of them"),
        (["--workers", "0"], "--workers 0: must be >= 1"),
    ],
)
def test_dask_flags_alone_are_refused(flags, expected, capsys):
    main = runpy.run_path(str(REPO / "tools" / "predict_raster.py"))["main"]
    with pytest.raises(SystemExit) as e:
        main(["--config-file", "c.yaml", "--input", "a.tif", "--output", "o.gpkg", *flags])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"predict_raster: error: {expected}"


def test_deepforest_merge_of_a_rotated_model_on_dask_is_refused_before_anything_runs(tmp_path):
    # DeepForest's merge is of horizontal boxes; a rotated model on Dask merges as tiled inference does (test_dask_rotated.py).
    from retina_plugin import ConfigError, load_config
    from retina_plugin.geo.dask_predict import predict_rasters_on_dask

    cfg = load_config(None, [*ROTATED_OPTS, "MODEL.RETINA_PLUGIN.TILE_MERGE", "deepforest"])
    output = tmp_path / "o.gpkg"
    with pytest.raises(ConfigError, match="TILE_MERGE deepforest merges horizontal boxes as DeepForest does; .* use TILE_MERGE edges"):
        predict_rasters_on_dask(cfg, [str(tmp_path / "a.tif")], str(output), workers=1)
    assert list(tmp_path.iterdir()) == []
