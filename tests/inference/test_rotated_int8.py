"""
Int8 inference of a rotated RetinaNetPlugin (retina_plugin/inference/int8/): the conversion is
the horizontal model's (the box conv has A * 5 outputs instead of A * 4), every convolution
becomes int8, and the int8 model's rotated detections follow the float32 model's; tiled, through
`inference_model`, it merges rotated boxes.
"""
import copy

import torch
from detectron2.modeling import build_model
from detectron2.structures import RotatedBoxes

from retina_plugin.inference.int8 import Int8Conv2d, calibrate_int8, quantize_int8, save_int8_calibration
from retina_plugin.inference.model import InferenceSettings, inference_model, with_precision
from retina_plugin.inference.tiling import TiledInference
from tool_runs import FEW_CANDIDATES, ROTATED_OPTS


def rotated_model(small_cfg):
    small_cfg.merge_from_list(ROTATED_OPTS + FEW_CANDIDATES)
    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.3  # enough detections to compare
    torch.manual_seed(0)
    return build_model(small_cfg).eval()


def test_int8_rotated_model_follows_the_float32_model(small_cfg, make_batch, single_thread):
    model = rotated_model(small_cfg)
    batch = [{"image": x["image"]} for x in make_batch()]
    int8 = quantize_int8(copy.deepcopy(model), calibrate_int8(model, [batch[:2], batch[2:]]))

    assert not any(isinstance(m, torch.nn.Conv2d) for m in int8.modules())
    assert isinstance(int8.head.bbox_pred, Int8Conv2d) and int8.head.bbox_pred.out_channels == 9 * 5
    with torch.no_grad():
        outputs, int8_outputs = model(batch), int8(batch)
    for x, y in zip(outputs, int8_outputs):
        x, y = x["instances"], y["instances"]
        assert isinstance(y.pred_boxes, RotatedBoxes) and len(x) > 0
        top = min(len(x), len(y), 20)
        assert (x.scores[:top] - y.scores[:top]).abs().max() < 0.05
    # The box deltas, the angle's among them, follow the float32 head's (as the features do).
    with torch.no_grad():
        images = model.preprocess_image(batch).tensor
        features = [model.backbone(images)[f] for f in model.head_in_features]
        int8_features = [int8.backbone(images)[f] for f in model.head_in_features]
        _, deltas = model.head(features)
        _, int8_deltas = int8.head(int8_features)
    for a, b in zip(deltas, int8_deltas):
        assert a.shape[-1] == 5
        for k in range(5):  # dx, dy, dw, dh, da
            assert (a[..., k] - b[..., k]).abs().mean() < 0.1 * a[..., k].abs().mean(), k


def test_tiled_int8_rotated_model_through_inference_model(small_cfg, make_batch, tmp_path, single_thread):
    model = rotated_model(small_cfg)
    batch = [{"image": x["image"]} for x in make_batch()]
    calibration = str(tmp_path / "int8_calibration.json")
    save_int8_calibration(calibration, calibrate_int8(model, [batch]))
    model.inference_dtype = "int8"
    settings = InferenceSettings(int8_calibration=calibration, tile_size=64, tile_overlap=0.25)
    int8 = with_precision(model, settings)
    tiled = inference_model(int8, settings)
    assert isinstance(tiled, TiledInference) and tiled.box_dim == 5 and getattr(int8, "int8", False)
    image = batch[0]["image"]  # 160x224: 3 x 4 tiles of 64 at overlap 0.25
    with torch.no_grad():
        result = tiled.detect(image)
    assert isinstance(result.pred_boxes, RotatedBoxes) and len(result) > 0 and result.image_size == (160, 224)
    # from tiles all over the image (turned boxes are not clipped: Detectron2's RotatedBoxes.clip
    # clips only boxes within 1 degree of horizontal)
    centres = result.pred_boxes.tensor[:, :2]
    assert centres[:, 0].min() < 64 and centres[:, 0].max() > 160 and centres[:, 1].max() > 96
