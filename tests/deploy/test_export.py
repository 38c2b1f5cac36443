"""
Export (retina_plugin/deploy/export.py, tools/export_model.py): the TorchScript file, reloaded with
torch.jit.load, and the ONNX file, run in onnxruntime, give the eager RetinaNetPlugin's
detections on the image they were traced on, on another image of the same size whose
candidate count crosses the top-k limit the other way, and on an image of another size.
"""
import os
import subprocess
import sys

import pytest
import torch

from retina_plugin import get_retina_plugin_cfg
from retina_plugin.compare import compare_detections
import tool_runs
from retina_plugin.deploy.export import (
    ExportError, build_model_for_export, check_export_request, eager_detections, export_model,
)  # fmt: skip
from retina_plugin.deploy.exported import run_exported
from retina_plugin.deploy.sample_image import sample_image
from tool_runs import BASE_CONFIG

# Tracing warns about each assert in Detectron2's structures it records as a constant; whether
# the trace generalizes is what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ResNet-18 with random weights; a 0.02 score threshold keeps about a thousand candidates on
# P3 of a 192x256 image, so the top-k limit can be set between two images' counts, and still
# gives detections whose scores spread (no ties) for NMS to order the same in every runtime.
SMALL_MODEL_OPTS = [
    *tool_runs.SMALL_MODEL_OPTS,
    "MODEL.RETINANET.SCORE_THRESH_TEST", "0.02",
    "INPUT.MIN_SIZE_TEST", "192",
    "INPUT.MAX_SIZE_TEST", "256",
]  # fmt: skip


def small_cfg():
    cfg = get_retina_plugin_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, BASE_CONFIG))
    cfg.merge_from_list(SMALL_MODEL_OPTS)
    return cfg


def candidates_per_level(model, image):
    """How many (anchor, class) pairs of each level score above the threshold."""
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        logits, _ = model.head([features[f] for f in model.head_in_features])
    return [int((x[0] > model.postprocess.logit_thresh).sum()) for x in logits]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The model, three images (2 of 192x256, 1 of 160x224) and its two exports, traced on the first."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model_for_export(small_cfg())
    images = [sample_image(small_cfg(), seed=0), sample_image(small_cfg(), seed=1)]
    images.append(sample_image(small_cfg(), seed=2)[:, :160, :224])
    assert images[0].shape == images[1].shape == (3, 192, 256)

    # A top-k limit between the two images' P3 counts: a trace that froze the first image's
    # branch (top-k taken or not) would be wrong or fail on the second.
    traced_count, other_count = (candidates_per_level(model, x)[0] for x in images[:2])
    model.postprocess.topk_candidates = (traced_count + other_count) // 2
    assert abs(traced_count - other_count) > 100, (traced_count, other_count)

    output_dir = str(tmp_path_factory.mktemp("export"))
    paths = {f: export_model(model, images[0], output_dir, f) for f in ("torchscript", "onnx")}
    yield model, images, paths
    torch.set_num_threads(previous_threads)


def assert_same_detections(actual, expected):
    """The same detections (> 0) as a set: class, IoU >= 0.999, score within 1e-5, none left over."""
    result = compare_detections(actual, expected, min_iou=0.999, score_atol=1e-5)
    assert result["count"][1] > 0
    assert result["match"] and result["matched"] == result["count"][0] == result["count"][1], result


@pytest.mark.parametrize("image_index", [0, 1, 2], ids=["traced-image", "other-image", "other-size"])
@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_exported_model_gives_eager_detections(exported, format, image_index):
    model, images, paths = exported
    image = images[image_index]
    assert_same_detections(run_exported(paths[format], image), eager_detections(model, image))


def test_torchscript_file_is_a_traced_module_and_eager_anchor_cache_stays_clean(exported):
    model, images, paths = exported
    assert paths["torchscript"].endswith("model.ts")
    boxes, scores, classes = torch.jit.load(paths["torchscript"])(images[1])
    assert boxes.shape[1:] == (4,) and scores.dtype == torch.float32 and classes.dtype == torch.int64
    # An eager forward after the export: the anchors it caches are keyed by int sizes, not by
    # the trace's size tensors (this test may run before any other eager forward of the model).
    eager_detections(model, images[1])
    sizes = [hw for key in model.anchor_generator._cache for level in key[0] for hw in level]
    assert sizes and all(isinstance(s, int) for s in sizes)


def test_scripting_and_unknown_formats_are_refused():
    with pytest.raises(ExportError, match="scripting"):
        check_export_request("torchscript", "scripting")
    with pytest.raises(ExportError, match="caffe2"):
        check_export_request("caffe2", "tracing")


def run_export_tool(*args):
    return subprocess.run(
        [sys.executable, os.path.join("tools", "export_model.py"), "--config-file", BASE_CONFIG, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_export_tool_writes_onnx_and_checks_it(tmp_path):
    result = run_export_tool("--format", "onnx", "--output", str(tmp_path), "--check", "--opts", *SMALL_MODEL_OPTS)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert os.path.getsize(tmp_path / "model.onnx") > 1e6
    assert "onnxruntime.InferenceSession" in log
    assert "check (onnx vs eager, (3, 192, 256) image)" in log and ": OK" in log


def test_export_tool_names_a_missing_weights_file(tmp_path):
    missing = str(tmp_path / "model_final.pth")
    result = run_export_tool("--output", str(tmp_path), "--opts", *SMALL_MODEL_OPTS, "MODEL.WEIGHTS", missing)
    assert result.returncode == 2
    assert f"export_model: error: MODEL.WEIGHTS file not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "model.ts")
