"""
A model of four input bands (BGR + near-infrared: len(MODEL.PIXEL_MEAN) = 4) through export
(ONNX, and TorchScript through tools/export_model.py --check), int8 inference and tiled
inference.
"""
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from detectron2.modeling import build_model

from retina_plugin.deploy.export import ExportError, eager_detections, export_model
from retina_plugin.deploy.exported import run_exported
from retina_plugin.deploy.sample_image import sample_image
from retina_plugin.inference.int8 import Int8Error, calibrate_int8, quantize_int8
from retina_plugin.weights.checkpoint import RetinaCheckpointer
from retina_plugin.inference.tiling import TiledInference
from export_setup import SMALL_MODEL_OPTS as EXPORT_OPTS, assert_same_detections, export_cfg, run_export_tool

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

BGR_MEAN = [103.53, 116.28, 123.675]
NIR_MEAN = 110.0  # a band at this value is 0 after normalisation (PIXEL_STD 1)
FOUR_BANDS = ["MODEL.PIXEL_MEAN", str(BGR_MEAN + [NIR_MEAN]), "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0, 1.0]"]


def test_four_band_onnx_export_gives_eager_detections(tmp_path, single_thread):
    torch.manual_seed(0)
    model = build_model(export_cfg(*FOUR_BANDS)).eval()
    image = sample_image(export_cfg(*FOUR_BANDS), seed=0)
    assert image.shape == (4, 192, 256)
    path = export_model(model, image, str(tmp_path), "onnx")
    for x in (image, sample_image(export_cfg(*FOUR_BANDS), seed=2)[:, :160, :224]):
        assert_same_detections(run_exported(path, x), eager_detections(model, x))


def test_export_tool_checks_a_four_band_torchscript_export(tmp_path):
    proc = run_export_tool("--format", "torchscript", "--output", str(tmp_path), "--check", "--opts", *EXPORT_OPTS, *FOUR_BANDS)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "# image: (4, H, W) float32 BGR + 1 further band, 0..255" in log
    assert "check (ts vs eager, (4, 192, 256) image)" in log and ": OK" in log


def test_a_sample_image_of_other_channels_is_refused(tmp_path):
    path = str(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8)).save(path)
    with pytest.raises(ExportError, match=r"reads as 3 channel\(s\) in INPUT.FORMAT BGR, the model takes 4"):
        sample_image(export_cfg(*FOUR_BANDS), path)


def test_int8_four_band_model_follows_float32(small_cfg, make_batch, single_thread):
    small_cfg.merge_from_list(FOUR_BANDS)
    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.3  # enough detections to compare
    small_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.02
    torch.manual_seed(2)  # random weights that give dozens of detections on each image
    model = build_model(small_cfg).eval()
    g = torch.Generator().manual_seed(1)
    batch = [{"image": torch.cat([x["image"], torch.rand(1, *x["image"].shape[1:], generator=g) * 255])} for x in make_batch()]
    int8 = quantize_int8(copy.deepcopy(model), calibrate_int8(model, [batch[:2], batch[2:]]))
    assert int8.backbone.bottom_up.stem.conv1.in_channels == 4 and not any(isinstance(m, torch.nn.Conv2d) for m in int8.modules())
    with torch.no_grad():
        outputs, int8_outputs = model(batch), int8(batch)
    for x, y in zip(outputs, int8_outputs):
        x, y = x["instances"], y["instances"]
        assert len(x) > 0
        top = min(len(x), len(y), 20)
        assert (x.scores[:top] - y.scores[:top]).abs().max() < 0.05

    with pytest.raises(Int8Error, match=r"calibration image 0 has 3 channel\(s\), the model takes 4"):
        calibrate_int8(model, [[{"image": make_batch()[0]["image"]}]])


def test_tiled_four_band_image_gives_the_rgb_models_detections(small_cfg, tmp_path, single_thread):
    # The fourth band at its PIXEL_MEAN and the stem adapted from the 3-band weights: tiling that
    # hands every band through, in order, to each tile gives the 3-band model's tiled result.
    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.3
    four_band = small_cfg.clone()
    four_band.merge_from_list(FOUR_BANDS)
    torch.manual_seed(0)
    rgb = build_model(small_cfg).eval()
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    model = build_model(four_band).eval()
    RetinaCheckpointer(model).load(str(tmp_path / "rgb.pth"))

    image = (torch.rand(3, 160, 224, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    bands = torch.cat([image, torch.full((1, 160, 224), int(NIR_MEAN), dtype=torch.uint8)])
    tiled = TiledInference(model, tile_size=96, overlap=0.25).detect(bands)
    expected = TiledInference(rgb, tile_size=96, overlap=0.25).detect(image)
    boxes = tiled.pred_boxes.tensor
    assert len(tiled) > 0 and (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 224).all() and (boxes[:, 3] <= 160).all()
    assert_same_detections(
        (boxes, tiled.scores, tiled.pred_classes), (expected.pred_boxes.tensor, expected.scores, expected.pred_classes)
    )
