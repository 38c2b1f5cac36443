"""What the tests of predict_raster on Dask share: its output as a set of detections, and the tool run as a user runs it."""
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np

from tool_runs import REPO


def detection_set(path):
    """The detections of a vector file as (source, bounds, score, label) rounded to 1e-4; asserts none twice."""
    frame = gpd.read_parquet(path) if str(path).endswith(".parquet") else gpd.read_file(path)
    rows = [
        (os.path.basename(s), *np.round(g.bounds, 4).tolist(), round(float(score), 4), label)
        for s, g, score, label in zip(frame.source, frame.geometry, frame.score, frame.label)
    ]
    assert len(set(rows)) == len(rows), "a detection is written twice"
    return set(rows)


def run_predict_raster(*args, env=None, check=True):
    """`python tools/predict_raster.py args...` from the repository root, torch on one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    command = [sys.executable, str(REPO / "tools" / "predict_raster.py"), *map(str, args)]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc
