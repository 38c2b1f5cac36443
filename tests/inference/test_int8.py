"""
Int8 inference (retina_plugin/inference/int8/, tools/calibrate_int8.py): each int8 part against
the float computation it replaces, the whole int8 model against the float32 one, the AP cost on
the tiny trained detector (conftest `trained`), and the int8 model through the demo and
train_net --eval-only.
"""
import copy
import json
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model

from retina_plugin.inference.int8 import (
    Int8Conv2d,
    Int8Error,
    QParams,
    QuantizedActivation,
    activation_qparams,
    calibrate_int8,
    load_int8_calibration,
    quantize_activation,
    quantize_int8,
    save_int8_calibration,
    weights_fingerprint,
)
from retina_plugin.data.shapes import generate_shapes_dataset
from retina_plugin.inference.int8.layers import Int8FPN, _max_pool_3x3_s2
from retina_plugin.inference.model import InferenceSettings, with_precision
from tiny_detector import REPO_ROOT, load_shapes_split


def conv_with_frozen_bn(cin, cout, k, stride=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    conv = Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, norm=FrozenBatchNorm2d(cout))
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
        conv.norm.weight.copy_(torch.rand(cout, generator=g) + 0.5)
        conv.norm.bias.copy_(torch.randn(cout, generator=g))
        conv.norm.running_mean.copy_(torch.randn(cout, generator=g) * 0.1)
        conv.norm.running_var.copy_(torch.rand(cout, generator=g) + 0.5)
    return conv.eval()


def on_the_grid(int8_conv: Int8Conv2d, x: torch.Tensor, conv) -> tuple:
    """The float conv on the int8 input and weights the Int8Conv2d sees, in float64: (x, expected output)."""
    q = quantize_activation(x, int8_conv.input_qparams)
    xq = q.dequantize().double()
    weight = conv.weight.double() * (conv.norm.weight * (conv.norm.running_var + conv.norm.eps).rsqrt()).double().view(-1, 1, 1, 1)
    scale = int8_conv.weight_scale.double().view(-1, 1, 1, 1)
    wq = (weight / scale).round().clamp(-128, 127) * scale
    return F.conv2d(xq, wq, int8_conv.bias.double(), conv.stride, conv.padding)


# ------------------------------------------------------------------ parts


def test_activation_qparams_cover_the_range_and_keep_zero_exact():
    assert activation_qparams(0.0, 2.55) == QParams(pytest.approx(0.01), 0)
    scale, zero_point = activation_qparams(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255) and zero_point == round(1.0 / scale)
    assert activation_qparams(0.5, 2.0).zero_point == 0  # widened to include 0
    x = torch.tensor([-1.0, 0.0, 3.0, 7.0]).view(1, 4, 1, 1)
    q = quantize_activation(x, QParams(scale, zero_point))
    assert q.dequantize().flatten().tolist() == pytest.approx([-1.0, 0.0, 3.0, 3.0], abs=scale / 2)  # 7 saturates
    assert q.data.dtype == torch.uint8 and q.data.is_contiguous(memory_format=torch.channels_last)
    # the documented formula, on a map with values beyond both ends of the range
    x = torch.randn(2, 16, 30, 40, generator=torch.Generator().manual_seed(0)) * 3
    expected = x.mul(1.0 / scale).round().add(zero_point).clamp(0, 255).to(torch.uint8)
    assert torch.equal(quantize_activation(x, QParams(scale, zero_point)).data, expected)


@pytest.mark.parametrize("k, stride", [(3, 1), (1, 1), (3, 2), (7, 2)])
def test_int8_conv_is_the_float_conv_on_the_int8_grid(k, stride):
    conv = conv_with_frozen_bn(16, 24, k, stride)
    x = torch.randn(2, 16, 19, 23)
    int8 = Int8Conv2d(conv, activation_qparams(x.min().item(), x.max().item())).eval()
    expected = on_the_grid(int8, x, conv)
    out = int8(x)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=1e-5)
    # ... and within the quantization error of the float32 conv itself
    assert (out - conv(x)).abs().max() < 0.05 * conv(x).abs().max()


def test_int8_conv_keeps_weights_packed_per_input_shape():
    conv = conv_with_frozen_bn(32, 64, 1)
    int8 = Int8Conv2d(conv, activation_qparams(-3, 3), packed_shapes=2).eval()
    inputs = [torch.randn(1, 32, h, w) for h, w in ((25, 38), (50, 76), (7, 9), (25, 38))]
    for x in inputs:  # each result is right whichever packing is cached
        torch.testing.assert_close(int8(x).double(), on_the_grid(int8, x, conv), atol=1e-4, rtol=1e-5)
    assert list(int8._packed) == [(1, 32, 7, 9), (1, 32, 25, 38)]  # the 2 most recently used


def test_int8_conv_fused_relu_uint8_output_and_residual_sum():
    conv = conv_with_frozen_bn(16, 16, 3)
    x = torch.rand(1, 16, 12, 14) * 4
    xq = activation_qparams(0, 4)
    expected = on_the_grid(Int8Conv2d(conv, xq), x, conv)
    out_qparams = activation_qparams(0, expected.relu().max().item())
    relu_u8 = Int8Conv2d(conv, xq, relu=True, output_qparams=out_qparams).eval()(x)
    assert relu_u8.data.dtype == torch.uint8 and (relu_u8.scale, relu_u8.zero_point) == out_qparams
    torch.testing.assert_close(relu_u8.dequantize().double(), expected.relu(), atol=out_qparams.scale * 0.51, rtol=0)

    shortcut = quantize_activation(torch.randn(1, 16, 12, 14), activation_qparams(-3, 3))
    target = (expected + shortcut.dequantize().double()).relu()
    sum_qparams = activation_qparams(0, target.max().item())
    summed = Int8Conv2d(conv, xq, relu=True, output_qparams=sum_qparams).eval()(x, accumulate=shortcut._replace(data=shortcut.data.clone()))
    torch.testing.assert_close(summed.dequantize().double(), target, atol=sum_qparams.scale * 0.51, rtol=0)

    # without ReLU, into a range with negative values (the FPN's lateral + top-down sums)
    target = expected + shortcut.dequantize().double()
    sum_qparams = activation_qparams(target.min().item(), target.max().item())
    assert sum_qparams.zero_point > 0
    summed = Int8Conv2d(conv, xq, output_qparams=sum_qparams).eval()(x, accumulate=shortcut._replace(data=shortcut.data.clone()))
    torch.testing.assert_close(summed.dequantize().double(), target, atol=sum_qparams.scale * 0.51, rtol=0)


@pytest.mark.parametrize("size", [(1, 8, 17, 23), (2, 64, 400, 608), (1, 3, 2, 2)])
def test_uint8_max_pool_equals_max_pool2d(size):
    x = torch.randint(0, 256, size, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    expected = F.max_pool2d(x.float(), kernel_size=3, stride=2, padding=1)
    assert torch.equal(_max_pool_3x3_s2(x).float(), expected)


# ------------------------------------------------------------------ whole model


@pytest.mark.parametrize("depth, norm, p6_source", [(18, "FrozenBN", "res5"), (50, "BN", "res5"), (18, "FrozenBN", "p5")])
def test_int8_model_follows_the_float32_model(small_cfg, make_batch, single_thread, depth, norm, p6_source):
    small_cfg.MODEL.RETINA_PLUGIN.P6_SOURCE = p6_source
    small_cfg.MODEL.RESNETS.DEPTH = depth
    small_cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth == 18 else 256
    small_cfg.MODEL.RESNETS.NORM = norm
    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.3  # enough detections to compare
    torch.manual_seed(0)
    model = build_model(small_cfg).eval()
    if norm == "BN":  # eval-mode BatchNorm with non-trivial statistics, folded like FrozenBN
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    batch = [{"image": x["image"]} for x in make_batch()]
    ranges = calibrate_int8(model, [batch[:2], batch[2:]])
    int8 = quantize_int8(copy.deepcopy(model), ranges)

    # Every convolution is int8; the ResNet blocks hand uint8 to each other, and so do the
    # FPN's lateral convolutions (their sums) to its output convolutions.
    assert not any(isinstance(m, torch.nn.Conv2d) for m in int8.modules())
    assert type(int8.backbone) is Int8FPN
    assert all(lat.output_qparams == out.input_qparams for lat, out in zip(int8.backbone.lateral_convs, int8.backbone.output_convs))
    with torch.no_grad():
        images = model.preprocess_image(batch).tensor
        res = int8.backbone.bottom_up(images.contiguous(memory_format=torch.channels_last))
        assert all(v.data.dtype == torch.uint8 for v in res.values())
        float_features, int8_features = model.backbone(images), int8.backbone(images)
        # The FPN levels only the head reads come out uint8 (P5 feeds P6 when P6_SOURCE is p5)
        uint8_levels = [k for k, v in int8_features.items() if isinstance(v, QuantizedActivation)]
        assert uint8_levels == (["p3", "p4", "p5"] if p6_source == "res5" else ["p3", "p4"])
        for name in float_features:
            a, b = float_features[name], int8_features[name]
            b = b.dequantize() if name in uint8_levels else b
            assert (a - b).abs().mean() < 0.05 * a.abs().mean(), name
        outputs, int8_outputs = model(batch), int8(batch)
    for x, y in zip(outputs, int8_outputs):
        x, y = x["instances"], y["instances"]
        assert len(x) > 0
        top = min(len(x), len(y), 20)
        assert (x.scores[:top] - y.scores[:top]).abs().max() < 0.05


def test_tiled_inference_runs_the_int8_model(small_cfg, make_batch, single_thread):
    from retina_plugin.inference.tiling import TiledInference

    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.3
    model = build_model(small_cfg).eval()
    batch = [{"image": x["image"]} for x in make_batch()]
    int8 = quantize_int8(model, calibrate_int8(model, [batch]))
    assert not list(int8.parameters())  # FrozenBN ResNet, no head norm: only buffers are left
    image = batch[0]["image"]  # 160x224: 3 x 4 tiles of 64 at overlap 0.25
    with torch.no_grad():
        tiled = TiledInference(int8, tile_size=64, overlap=0.25).detect(image)
    assert len(tiled) > 0
    boxes = tiled.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 224).all() and (boxes[:, 3] <= 160).all()


def test_int8_model_is_inference_only_and_needs_its_calibration(small_cfg, make_batch):
    model = build_model(small_cfg).eval()
    batch = [{"image": x["image"]} for x in make_batch()]
    ranges = calibrate_int8(model, [batch])
    missing = dict(ranges)
    del missing["head.cls_score:in"]
    with pytest.raises(Int8Error, match=r"no range for 'head.cls_score:in'"):
        quantize_int8(copy.deepcopy(model), missing, source="x.json")
    int8 = quantize_int8(model, ranges)
    with pytest.raises(Int8Error, match="already int8"):
        calibrate_int8(int8, [batch])
    int8.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        int8(make_batch())


def test_a_model_built_for_int8_refuses_to_run_unquantized(small_cfg, make_batch):
    small_cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "int8"
    small_cfg.MODEL.RETINA_PLUGIN.INT8_CALIBRATION = "somewhere.json"
    model = build_model(small_cfg).eval()
    with pytest.raises(RuntimeError, match="load_model"):
        model([{"image": make_batch()[0]["image"]}])
    with pytest.raises(Int8Error, match="somewhere.json"):
        with_precision(model, InferenceSettings.from_config(small_cfg))


def test_unsupported_models_are_named(small_cfg):
    small_cfg.MODEL.RESNETS.NORM = "GN"
    model = build_model(small_cfg).eval()
    with pytest.raises(Int8Error, match=r"backbone\.bottom_up\.stem\.conv1 has GroupNorm"):
        quantize_int8(model, {})


def test_calibration_file_round_trip_and_errors(tmp_path):
    ranges = {"a.conv:in": (-1.5, 2.0), "b:out": (0.0, 3.25)}
    path = str(tmp_path / "calib.json")
    save_int8_calibration(path, ranges, weights="model.pth")
    assert load_int8_calibration(path) == ranges
    assert json.load(open(path))["weights"] == "model.pth"
    bad = tmp_path / "bad.json"
    for text, message in [
        ("{", "is not JSON"),
        ('{"ranges": {}}', "not written by tools/calibrate_int8.py"),
        ('{"format": "retina_plugin int8 calibration", "ranges": {"x": [2, 1]}}', r"range 'x' = \[2, 1\]"),
        ('{"format": "retina_plugin int8 calibration", "ranges": {"x": [0, NaN]}}', "finite"),
    ]:
        bad.write_text(text)
        with pytest.raises(Int8Error, match=message) as e:
            load_int8_calibration(str(bad))
        assert str(bad) in str(e.value)
    with pytest.raises(Int8Error, match="not found: .*missing.json"):
        load_int8_calibration(str(tmp_path / "missing.json"))


def test_calibration_is_tied_to_its_weights(small_cfg, make_batch, tmp_path):
    torch.manual_seed(0)
    model = build_model(small_cfg).eval()
    path = str(tmp_path / "calib.json")
    ranges = calibrate_int8(model, [[{"image": x["image"]} for x in make_batch()]])
    save_int8_calibration(path, ranges, weights="a.pth", weights_fingerprint=weights_fingerprint(model))
    assert load_int8_calibration(path, model) == ranges
    torch.manual_seed(1)
    other = build_model(small_cfg).eval()
    with pytest.raises(Int8Error, match=r"calib.json was made for other weights \(it names 'a.pth'\)"):
        load_int8_calibration(path, other)


def test_train_net_refuses_to_train_with_int8_inference(tmp_path):
    from retina_plugin.config import ConfigError
    from retina_plugin.cli.train_net import argument_parser, setup

    args = argument_parser().parse_args(
        ["--config-file", f"{REPO_ROOT}/configs/shapes_R18_cpu.yaml", "OUTPUT_DIR", str(tmp_path),
         "MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", "int8", "MODEL.RETINA_PLUGIN.INT8_CALIBRATION", "c.json"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="INFERENCE_DTYPE int8 is for --eval-only"):
        setup(args)
    assert not (tmp_path / "log.txt").exists()


# ------------------------------------------------------------------ the trained detector, end to end

VAL_IMAGES = 60


@pytest.fixture(scope="module")
def val_split(trained, tmp_path_factory):
    """60 unseen 128x128 images of 10-20 px shapes, as a COCO json with the one class "shape"."""
    root = tmp_path_factory.mktemp("int8_val")
    generate_shapes_dataset(
        root, num_train=0, num_val=VAL_IMAGES, image_size=128, seed=7, min_object_size=10, max_object_size=20, max_objects=10
    )
    load_shapes_split(root, "val")
    return str(root / "annotations" / "shape_val.json"), str(root / "val")


def run_tool(*args):
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_calibrated_int8_loses_under_half_an_ap_point_and_runs_in_the_tools(trained, val_split, tmp_path):
    test_json, test_images = val_split
    calibration = tmp_path / "int8.json"
    datasets = ["--train-json", trained.train_json, "--train-images", trained.train_images,
                "--test-json", test_json, "--test-images", test_images]  # fmt: skip
    result = run_tool(
        "tools/calibrate_int8.py", "--config-file", trained.config_file, *datasets, "--num-images", "16", "--eval",
        "--output", str(calibration), "--opts", "MODEL.WEIGHTS", trained.weights, "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    written = json.loads(calibration.read_text())
    assert written["images"] == 16 and written["weights"] == trained.weights
    assert written["weights_fingerprint"] == weights_fingerprint(trained.model)
    (evaluation,) = written["evaluation"].values()
    float_ap, int8_ap = evaluation["float32"]["AP"], evaluation["int8"]["AP"]
    print(f"\nAP float32 {float_ap:.2f} (AP50 {evaluation['float32']['AP50']:.2f}), int8 {int8_ap:.2f}")
    assert evaluation["float32"]["AP50"] > 80  # a detector worth quantizing
    assert abs(int8_ap - float_ap) <= 0.5  # the bound
    assert f"int8 - float32: AP {int8_ap - float_ap:+.2f}" in result.stdout
    assert f"INT8_CALIBRATION {calibration}" in result.stdout

    int8_opts = ["MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", "int8", "MODEL.RETINA_PLUGIN.INT8_CALIBRATION", str(calibration)]
    # train_net --eval-only evaluates the same int8 model: the same AP.
    result = run_tool(
        "tools/train_net.py", "--config-file", trained.config_file, "--eval-only", *datasets,
        "MODEL.WEIGHTS", trained.weights, "OUTPUT_DIR", str(tmp_path / "eval"), *int8_opts,
    )  # fmt: skip
    copypaste = re.findall(r"copypaste: ([\d.]+),", result.stdout + result.stderr)
    assert copypaste and float(copypaste[-1]) == pytest.approx(int8_ap, abs=1e-3)
    assert "convolutions quantized" in result.stdout + result.stderr

    # The demo draws the int8 model's detections.
    run_tool(
        "tools/demo.py", "--config-file", trained.config_file, "--input", f"{test_images}/000000.png",
        "--output", str(tmp_path / "demo"), "--opts", "MODEL.WEIGHTS", trained.weights, *int8_opts,
    )  # fmt: skip
    drawn = tmp_path / "demo" / "000000.png"
    assert drawn.is_file() and drawn.stat().st_size > 0


def test_calibrate_tool_names_an_unknown_dataset(trained, tmp_path):
    result = subprocess.run(
        [sys.executable, "tools/calibrate_int8.py", "--config-file", trained.config_file, "--dataset", "none_such",
         "--opts", "MODEL.WEIGHTS", trained.weights],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "calibrate_int8: error: dataset 'none_such' is not registered" in result.stderr
    assert "Traceback" not in result.stderr

