"""
tools/predict_raster.py's outputs are whole and owned: a run SIGKILLed at each point of its
write (RETINA_TEST_PAUSE_OUTPUT makes it wait there) leaves the previous output intact or the
new one complete, the next run removes what it left, and a second run on the same output is
refused while the first holds it. Real subprocesses, real GeoTIFFs and vector files.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import geopandas as gpd
import pytest

from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.errors import UserError
from retina_plugin.geo.predict import predict_rasters
from retina_plugin.geo.scenes import write_shapes_scene
from tool_runs import REPO, run_tool

TILE, OLD_SCORE, NEW_SCORE = 128, 0.9, 0.5


def _options(trained, score):
    return ["--config-file", trained.config_file, "--tile", str(TILE), "--no-progress",
            "--opts", "MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", str(score)]  # fmt: skip


def _predict(trained, scene, output, coco_json, score):
    cfg, _ = raster_config(trained.config_file, ["MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", score], tile=TILE)
    return predict_rasters(cfg, [scene], str(output), str(coco_json), progress=False)


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    """A scene, the previous outputs of a run at OLD_SCORE (.gpkg, .shp) and the count a run at NEW_SCORE writes."""
    root = tmp_path_factory.mktemp("atomic")
    scene = write_shapes_scene(str(root / "scene.tif"), 384, border=32, seed=4, single_class=True).path
    for ext in ("gpkg", "shp"):
        (root / ext).mkdir()
        _predict(trained, scene, root / ext / f"dets.{ext}", root / ext / "dets.json", OLD_SCORE)
    new = _predict(trained, scene, root / "new.gpkg", root / "new.json", NEW_SCORE)
    old = len(json.loads((root / "gpkg" / "dets.json").read_text()))
    assert 0 < old < len(new[0].boxes)  # the two runs are told apart by their counts
    return scene, root, old, len(new[0].boxes)


def _start(trained, scene, output, point, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", RETINA_TEST_PAUSE_OUTPUT=point)
    argv = [sys.executable, str(REPO / "tools/predict_raster.py"), "--input", scene, "--output", str(output), *extra]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc, marker, timeout=300):
    start = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, f"predict_raster ended before {marker.name}:\n{proc.stdout.read()[-4000:]}"
        assert time.monotonic() - start < timeout, f"no {marker.name} after {timeout} s"
        time.sleep(0.1)


def _features(path):
    return len(gpd.read_file(path))


def _detections(path):
    return len(json.loads(path.read_text()))


@pytest.mark.parametrize(
    "ext, point",
    [("gpkg", "vector-written"), ("gpkg", "written"), ("gpkg", "side-renamed"), ("shp", "written")],
)
def test_killed_write_leaves_the_previous_output_or_the_new_one(trained, runs, tmp_path, caplog, ext, point):
    scene, root, old, new = runs
    shutil.copytree(root / ext, tmp_path, dirs_exist_ok=True)
    out, coco = tmp_path / f"dets.{ext}", tmp_path / "dets.json"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    proc = _start(trained, scene, out, point, "--coco-json", str(coco), *_options(trained, NEW_SCORE))
    _wait_for(proc, tmp_path / f"dets.{ext}.{point}.paused")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    temporaries = sorted(p.name for p in tmp_path.glob(f".*.partial-{proc.pid}*"))
    assert temporaries, "the killed run left no temporaries: nothing was written aside"
    assert (tmp_path / f"dets.{ext}.lock").read_text().strip() == str(proc.pid)

    # Each file is whole: the previous one, or, once the side files are renamed, the new json.
    if point == "side-renamed":
        assert _detections(coco) == new
        assert (out.read_bytes(), _features(out)) == (before[out.name], old)
    else:
        assert {name: (tmp_path / name).read_bytes() for name in before} == before
        assert (_features(out), _detections(coco)) == (old, old)

    # The next run takes over the dead run's lock, removes its temporaries and writes the new output.
    with caplog.at_level(logging.WARNING, logger="retina_plugin"):
        _predict(trained, scene, out, coco, NEW_SCORE)
    assert f"dets.{ext}.lock: taking over the lock of process {proc.pid}, which is no longer running" in caplog.text
    assert (_features(out), _detections(coco)) == (new, new)
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob("*.lock"))


def test_second_run_on_the_same_output_is_refused_while_the_first_writes(trained, runs, tmp_path):
    scene, _, _, new = runs
    out = tmp_path / "dets.gpkg"
    first = _start(trained, scene, out, "locked", *_options(trained, NEW_SCORE))
    marker = tmp_path / "dets.gpkg.locked.paused"
    _wait_for(first, marker)

    second = run_tool("tools/predict_raster.py", "--input", scene, "--output", str(out), *_options(trained, NEW_SCORE), check=False)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if "error" in line]
    assert errors == [f"predict_raster: error: {out} is being written by process {first.pid} (lock {out}.lock)"], second.stderr[-2000:]
    assert not out.exists()

    marker.unlink()  # the first run goes on, and finishes
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-3000:]
    assert _features(out) == new and not (tmp_path / "dets.gpkg.lock").exists()
    run_tool("tools/predict_raster.py", "--input", scene, "--output", str(out), *_options(trained, OLD_SCORE))
    assert _features(out) < new  # the second run, once free, wrote its own detections


def test_lock_of_a_dead_process_is_taken_over(trained, runs, tmp_path, caplog):
    scene, _, _, new = runs
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "dets.geojson"
    (tmp_path / "dets.geojson.lock").write_text(f"{gone.pid}\n")
    with caplog.at_level(logging.WARNING, logger="retina_plugin"):
        _predict(trained, scene, out, tmp_path / "dets.json", NEW_SCORE)
    assert f"taking over the lock of process {gone.pid}, which is no longer running" in caplog.text
    assert _features(out) == new and not (tmp_path / "dets.geojson.lock").exists()


def test_one_file_named_for_both_outputs_is_refused_before_the_run(trained, runs, tmp_path):
    scene, _, _, _ = runs
    out = tmp_path / "dets.json"  # GeoJSON by its ending, and asked for as the COCO results too
    with pytest.raises(UserError, match=r"dets\.json: the same file is given for two outputs"):
        _predict(trained, scene, out, out, NEW_SCORE)
    assert list(tmp_path.iterdir()) == []
