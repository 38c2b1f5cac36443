"""
Tools that load weights say so, and only so: Detectron2's "No checkpoint found. Initializing
model from scratch" (fvcore's Checkpointer.load of an empty path) must not come before or
instead of the load of MODEL.WEIGHTS. Real checkpoint files, real tool runs.
"""
import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

from retina_plugin import load_config
from retina_plugin.weights.checkpoint import RetinaCheckpointer
from tool_runs import BASE_CONFIG, REPO, SMALL_MODEL_OPTS, run_tool

FROM_SCRATCH = "No checkpoint found. Initializing model from scratch"
SMALL_TEST_OPTS = [*SMALL_MODEL_OPTS, "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128"]


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A checkpoint of the small YAML model (tool_runs.SMALL_MODEL_OPTS), written by RetinaCheckpointer."""
    folder = tmp_path_factory.mktemp("weights")
    RetinaCheckpointer(build_model(load_config(str(REPO / BASE_CONFIG), SMALL_MODEL_OPTS)), str(folder)).save("small")
    return folder / "small.pth"


def _loads_only(proc, weights):
    log = proc.stdout + proc.stderr
    assert f"[Checkpointer] Loading from {weights}" in log, log[-3000:]
    assert FROM_SCRATCH not in log, log[-3000:]


def test_demo_loads_the_weights_without_from_scratch(small_weights, tiny_shapes, tmp_path):
    image = sorted((tiny_shapes / "val").glob("*.png"))[0]  # not the folder's image-size cache
    proc = run_tool("tools/demo.py", "--config-file", BASE_CONFIG, "--input", str(image), "--output", str(tmp_path),
                    "--opts", *SMALL_TEST_OPTS, "MODEL.WEIGHTS", str(small_weights))  # fmt: skip
    _loads_only(proc, small_weights)
    assert (tmp_path / image.name).is_file()


def test_train_net_eval_only_loads_the_weights_without_from_scratch(small_weights, tiny_shapes, tmp_path):
    proc = run_tool(
        "tools/train_net.py", "--eval-only", "--config-file", BASE_CONFIG,
        "--test-json", str(tiny_shapes / "annotations" / "instances_val.json"), "--test-images", str(tiny_shapes / "val"),
        *SMALL_TEST_OPTS, "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", str(small_weights),
    )  # fmt: skip
    _loads_only(proc, small_weights)
    assert "Evaluation results for bbox" in proc.stdout + proc.stderr


def test_lazyconfig_eval_only_loads_the_weights_without_from_scratch(tiny_shapes, tmp_path):
    weights = tmp_path / "lazy.pth"
    model = instantiate(LazyConfig.load(str(REPO / "configs" / "shapes_R18_cpu.py")).model)
    RetinaCheckpointer(model, str(tmp_path)).save("lazy")
    proc = run_tool(
        "tools/lazyconfig_train_net.py", "--eval-only", "--config-file", "configs/shapes_R18_cpu.py",
        "--test-json", str(tiny_shapes / "annotations" / "instances_val.json"), "--test-images", str(tiny_shapes / "val"),
        "dataloader.test.num_workers=0", "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        f"train.init_checkpoint={weights}", f"train.output_dir={tmp_path / 'eval'}",
    )  # fmt: skip
    _loads_only(proc, weights)
