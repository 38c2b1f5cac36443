"""The README's run command end to end (minutes on a CPU): `make test-slow` or `pytest -m slow`."""
import json
import os
import subprocess
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_embedded_run_reaches_ap_50(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, RETINA_PLUGIN_OUTPUT=str(out))
    proc = subprocess.run(["bash", "scripts/run_embedded.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    evaluations = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if "bbox/AP" in line]
    assert evaluations and evaluations[-1]["bbox/AP"] >= 50.0, evaluations
    demo_images = sorted((out / "demo").glob("*.png"))
    assert len(demo_images) == 10 and all(cv2.imread(str(p)) is not None for p in demo_images)
    assert (out / "metrics.png").stat().st_size > 10_000
    assert str(out / "metrics.png") in proc.stdout

    # int8 inference of the trained model costs at most 0.5 AP on the val split (issue bound).
    calibration = out / "int8_calibration.json"
    proc = subprocess.run(
        [".venv/bin/python", "tools/calibrate_int8.py", "--config-file", "configs/shapes_R18_cpu.yaml", "--eval",
         "--output", str(calibration), "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(out)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    evaluation = json.loads(calibration.read_text())["evaluation"]["shapes_val"]
    assert abs(evaluation["int8"]["AP"] - evaluation["float32"]["AP"]) <= 0.5, evaluation

