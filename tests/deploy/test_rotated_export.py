"""
Export of a rotated RetinaNetPlugin (retina_plugin/deploy/export.py, tools/export_model.py): the
TorchScript file, reloaded with torch.jit.load, and the ONNX network (format onnx-network, run in
onnxruntime, its outputs through the model's postprocess) give the eager model's rotated
detections (XYWHA, compared by rotated IoU) on the image they were traced on, on another image of
the same size whose candidate count crosses the top-k limit the other way, and on an image of
another size. The whole-model ONNX is refused for a rotated model in one line.
"""
import os

import pytest
import torch

from retina_plugin.deploy.export import build_model_for_export, eager_detections, export_model, run_exported, sample_image
from test_export import SMALL_MODEL_OPTS, assert_same_detections, candidates_per_level, run_export_tool, small_cfg

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

ROTATED_OPTS = [
    "MODEL.ANCHOR_GENERATOR.NAME", "RotatedAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.ANGLES", "[[0.0]]",
    "MODEL.RETINANET.BBOX_REG_WEIGHTS", "(1.0, 1.0, 1.0, 1.0, 1.0)",
]  # fmt: skip


def rotated_cfg():
    cfg = small_cfg()
    cfg.merge_from_list(ROTATED_OPTS)
    return cfg


def test_whole_model_onnx_is_refused_for_a_rotated_model(tmp_path):
    result = run_export_tool("--format", "onnx", "--output", str(tmp_path / "out"), "--opts", *SMALL_MODEL_OPTS, *ROTATED_OPTS)
    assert result.returncode == 2, result.stdout + result.stderr
    line = "export_model: error: format onnx: the model predicts rotated boxes (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator)"
    assert line in result.stderr and "--format onnx-network" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
