"""
tools/predict_raster.py --scheduler on a cluster started by hand, as in an sbatch script
(docs/distributed_prediction.md): `dask scheduler` and two `dask worker` processes on
127.0.0.1, on ports the scheduler picks, its address read from its scheduler file. The
detections equal the single-process run's as sets, each once; both workers ran tasks; the
cluster is left running for the next run, and torn down here.
"""
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from distributed import Client

from dask_runs import detection_set, run_predict_raster
from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.geo.parts import read_part
from retina_plugin.geo.predict import predict_rasters
from retina_plugin.geo.scenes import write_shapes_scene
from tool_runs import REPO

TILE, OVERLAP, SCORE, BLOCK = 128, 0.25, 0.5, 2
# 512 px: 5 x 5 windows in blocks of 2 x 2 (2 + 2 + 1 a side: 9 blocks); 320 px: 3 x 3 windows, 4 blocks.
SIZES, NUM_PARTS = (512, 320), 13
DASK = Path(sys.executable).with_name("dask")


def start(command, log, env):
    with open(log, "w") as f:
        return subprocess.Popen([str(DASK), *command], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


def stop(processes):
    """
    Terminate the processes and their children (a worker's nanny runs the worker in a child), by
    pid: the workers first, then the scheduler (a worker told to close by a closing scheduler is
    killed by its nanny only after seconds).
    """
    children = [c for p in processes for c in _children(p.pid)]
    workers, scheduler = processes[1:], processes[:1]
    for group in (workers, scheduler):
        for p in group:
            p.terminate()
        for p in group:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for child in psutil.wait_procs(children, timeout=10)[1]:
        child.kill()


def _children(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two workers (one process, one thread each) on 127.0.0.1; yields the scheduler's address and the processes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    scheduler_file = tmp_path / "scheduler.json"
    processes = []
    try:
        # --idle-timeout and --death-timeout end them should this process die before its finally.
        processes.append(start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--idle-timeout", "300s",
                                "--scheduler-file", scheduler_file], tmp_path / "scheduler.log", env))  # fmt: skip
        for i in range(2):
            processes.append(start(["worker", "--scheduler-file", scheduler_file, "--host", "127.0.0.1", "--nworkers", "1",
                                    "--nthreads", "1", "--no-dashboard", "--death-timeout", "60s",
                                    "--local-directory", tmp_path / f"worker_{i}"], tmp_path / f"worker_{i}.log", env))  # fmt: skip
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline and processes[0].poll() is None:
            time.sleep(0.1)
        assert scheduler_file.exists(), (tmp_path / "scheduler.log").read_text()
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            worker_pids = set(client.run(os.getpid).values())
        yield address, processes, worker_pids
    finally:
        stop(processes)


def test_predict_raster_on_a_scheduler_started_by_hand(trained, cluster, tmp_path, single_thread):
    address, processes, worker_pids = cluster
    assert address.startswith("tcp://127.0.0.1:") and len(worker_pids) == 2
    paths = [write_shapes_scene(str(tmp_path / f"scene_{size}.tif"), size, seed=50 + size, single_class=True).path for size in SIZES]
    opts = ["MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", str(SCORE)]
    cfg, _ = raster_config(trained.config_file, opts, tile=TILE, overlap=OVERLAP)
    reference = tmp_path / "one.gpkg"
    predict_rasters(cfg, paths, str(reference), progress=False)

    out = tmp_path / "dask.gpkg"
    proc = run_predict_raster(
        "--config-file", trained.config_file, "--input", *paths, "--output", out, "--tile", TILE, "--overlap", OVERLAP,
        "--scheduler", address, "--block-windows", BLOCK, "--no-progress", "--opts", *opts,
    )  # fmt: skip
    assert f"0 of {NUM_PARTS} parts already done" in proc.stdout and "2 Dask worker(s) ready" in proc.stdout
    expected = detection_set(reference)
    assert len(expected) > 20
    assert detection_set(out) == expected
    ran = {read_part(p)["attrs"]["worker_pid"] for p in glob.glob(f"{out}.parts/*.parquet")}
    assert ran == worker_pids
    assert all(p.poll() is None for p in processes), "the cluster is left running"
