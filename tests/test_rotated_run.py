"""
The embedded rotated run (`make run-rotated`, scripts/run_rotated.sh): the rotated model and its
horizontal twin trained on the same rotated data, both scored with rotated IoU. The fast test runs
tools/train_net.py with both configs on a tiny generated dataset for a few iterations; the whole
run is marked slow.
"""
import json
import os
import subprocess
import sys

import pytest

from retina_plugin.data.rotated_shapes import generate_rotated_shapes_dataset
from tool_runs import QUICK_OPTS, REPO, dataset_args, read_metrics, run_tool


@pytest.fixture(scope="module")
def tiny_rotated_shapes(tmp_path_factory):
    """A generated rotated shapes dataset: 8 train / 4 val images of 128 px."""
    root = tmp_path_factory.mktemp("rotated_shapes")
    generate_rotated_shapes_dataset(root, num_train=8, num_val=4, image_size=128, seed=3, max_groups=2)
    return root


@pytest.mark.parametrize("config", ["rotated_shapes_R18.yaml", "rotated_shapes_R18_horizontal.yaml"])
def test_a_few_iterations_write_a_checkpoint_scored_with_rotated_iou(tiny_rotated_shapes, tmp_path, config):
    out = tmp_path / "run"
    run_tool(
        "tools/train_net.py", "--config-file", f"configs/{config}", *dataset_args(tiny_rotated_shapes),
        *QUICK_OPTS, "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert (out / "model_final.pth").stat().st_size > 1_000_000
    # The evaluation of a dataset of rotated boxes: DOTA's mAP50 and the rotated COCO AP, for either model.
    evaluation = [m for m in read_metrics(out) if "dota/mAP50" in m]
    assert evaluation, read_metrics(out)[-1]
    assert 0.0 <= evaluation[-1]["dota/mAP50"] <= 100.0 and "bbox/AP50" in evaluation[-1], evaluation[-1]


@pytest.mark.slow
def test_the_rotated_model_beats_its_horizontal_twin_on_rotated_iou(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, RETINA_PLUGIN_OUTPUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/run_rotated.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ap50 = json.loads((out / "ap50.json").read_text())
    assert ap50["rotated"]["mAP50"] > ap50["horizontal"]["mAP50"], ap50
    assert "AP50 with rotated IoU on rotated_shapes_val" in proc.stdout
