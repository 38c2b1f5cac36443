"""
Export of a rotated RetinaNetPlugin (retina_plugin/deploy/export.py, tools/export_model.py): the
TorchScript file, reloaded with torch.jit.load, and the ONNX network (format onnx-network, run in
onnxruntime, its outputs through the model's postprocess) give the eager model's rotated
detections (XYWHA, compared by rotated IoU) on the image they were traced on, on another image of
the same size whose candidate count crosses the top-k limit the other way, and on an image of
another size; so does the whole model in ONNX (format onnx: its rotated NMS an ONNX Loop, run in
onnxruntime).
"""
import os

import pytest

from retina_plugin.deploy.export import eager_detections
from retina_plugin.deploy.exported import run_exported
from export_setup import SMALL_MODEL_OPTS, assert_same_detections, run_export_tool, export_cfg, traced_exports
from tool_runs import ROTATED_OPTS

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The rotated model, three images (2 of 192x256, 1 of 160x224) and its three exports, traced on the first."""
    yield from traced_exports(export_cfg(*ROTATED_OPTS), ("torchscript", "onnx", "onnx-network"), str(tmp_path_factory.mktemp("export")))


@pytest.mark.parametrize("image_index", [0, 1, 2], ids=["traced-image", "other-image", "other-size"])
@pytest.mark.parametrize("format", ["torchscript", "onnx", "onnx-network"])
def test_exported_rotated_model_gives_eager_detections(exported, format, image_index):
    model, images, paths = exported
    image = images[image_index]
    boxes, scores, classes = run_exported(paths[format], image, model.postprocess)
    assert boxes.shape[1] == 5 and boxes[:, 4].abs().max() > 0.1  # rotated boxes, turned
    assert_same_detections((boxes, scores, classes), eager_detections(model, image))


# The TorchScript run of the tool is with the slow tests: the onnx run covers the tool's path for a
# rotated model, and test_exported_rotated_model_gives_eager_detections the TorchScript export.
@pytest.mark.parametrize("format, file", [pytest.param("torchscript", "model.ts", marks=pytest.mark.slow), ("onnx", "model.onnx")])
def test_export_tool_checks_a_rotated_export(tmp_path, format, file):
    result = run_export_tool("--format", format, "--output", str(tmp_path), "--check", "--opts", *SMALL_MODEL_OPTS, *ROTATED_OPTS)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert os.path.getsize(tmp_path / file) > 1e6
    assert f"check ({file.split('.')[1]} vs eager, (3, 192, 256) image)" in log and ": OK" in log


# The horizontal model's onnx-network runs with the slow tests (tests/deploy/test_export.py covers its network).
@pytest.mark.parametrize("rotated", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["rotated", "horizontal"])
def test_export_tool_checks_the_onnx_network(tmp_path, rotated):
    opts = [*SMALL_MODEL_OPTS, *(ROTATED_OPTS if rotated else [])]
    result = run_export_tool("--format", "onnx-network", "--output", str(tmp_path), "--check", "--opts", *opts)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert os.path.getsize(tmp_path / "network.onnx") > 1e6
    assert "network_detections(postprocess, outputs" in log
    assert "check (onnx vs eager, (3, 192, 256) image)" in log and ": OK" in log
