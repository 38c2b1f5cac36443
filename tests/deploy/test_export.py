"""
Export (retina_plugin/deploy/export.py, tools/export_model.py): the TorchScript file, reloaded with
torch.jit.load, and the ONNX file, run in onnxruntime, give the eager RetinaNetPlugin's
detections on the image they were traced on, on another image of the same size whose
candidate count crosses the top-k limit the other way, and on an image of another size.
"""
import os

import pytest
import torch

from retina_plugin.deploy.export import ExportError, check_export_request, eager_detections
from retina_plugin.deploy.exported import run_exported
from export_setup import SMALL_MODEL_OPTS, assert_same_detections, run_export_tool, export_cfg, traced_exports

# Tracing warns about each assert in Detectron2's structures it records as a constant; whether
# the trace generalizes is what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The model, three images (2 of 192x256, 1 of 160x224) and its two exports, traced on the first."""
    yield from traced_exports(export_cfg(), ("torchscript", "onnx"), str(tmp_path_factory.mktemp("export")))


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
