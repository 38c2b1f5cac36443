"""
Winograd F(4x4, 3x3) at CPU float32 inference (MODEL.RETINA_PLUGIN.WINOGRAD): equal to the
direct convolution within float rounding, used exactly where it applies, and the same
detections as the direct convolution on an R50-FPN; training, export and int8 calibration
keep the direct convolution.
"""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from retina_plugin import load_config
from retina_plugin.compare import compare_detections
from retina_plugin.modeling import winograd
from retina_plugin.modeling.backbone import FrozenBNFoldedConv2d
from retina_plugin.modeling.winograd import InferenceConv2d
from tests.modeling.test_parity import calibrate_frozen_batchnorm

pytestmark = pytest.mark.usefixtures("single_thread")


def conv_case(n, c, k, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g).relu_().contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3, generator=g) / (9 * c) ** 0.5
    bias = torch.randn(k, generator=g)
    return x, weight, bias


# Sizes not multiples of the 4x4 tile, more than one chunk of tiles (also at 720 output
# channels, whose chunks are smaller), a batch of 2.
@pytest.mark.parametrize(
    "n, c, k, h, w", [(1, 256, 256, 50, 76), (2, 256, 40, 13, 19), (1, 32, 720, 7, 10), (1, 64, 720, 40, 60), (1, 8, 8, 70, 150)]
)
@pytest.mark.parametrize("relu", [False, True])
def test_equals_direct_convolution(n, c, k, h, w, relu):
    x, weight, bias = conv_case(n, c, k, h, w)
    expected = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    if relu:
        expected = expected.relu()
    out = winograd.winograd_conv2d(x, winograd.transform_filter(weight), bias, relu=relu)
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    # float32 rounding of F(4x4, 3x3): ~1e-6 of the output's scale here; a wrong tile or
    # transform is off by the output's scale.
    err = (out.double() - expected).abs().max().item()
    assert err <= 1e-5 * expected.abs().max().item(), err
    direct = F.conv2d(x, weight, bias, padding=1)
    assert (out - (direct.relu() if relu else direct)).abs().max().item() <= 1e-5 * expected.abs().max().item()
    no_bias = winograd.winograd_conv2d(x, winograd.transform_filter(weight), None)
    assert (no_bias - F.conv2d(x, weight, None, padding=1)).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_applies_only_to_3x3_stride_1_convolutions_of_128_channels_in_float32():
    x = torch.randn(1, 256, 16, 16)
    w = torch.randn(256, 256, 3, 3)
    geometry = ((1, 1), (1, 1), (1, 1), 1)
    assert winograd.applies(x, w, *geometry)
    assert winograd.applies(torch.randn(1, 512, 8, 8), torch.randn(720, 512, 3, 3), *geometry)
    assert not winograd.applies(x, w, (2, 2), (1, 1), (1, 1), 1)  # stride 2 (P6, P7)
    assert not winograd.applies(x, w, (1, 1), (0, 0), (1, 1), 1)
    assert not winograd.applies(x, w, (1, 1), (2, 2), (2, 2), 1)  # dilated
    assert not winograd.applies(x, torch.randn(256, 256, 1, 1), (1, 1), (0, 0), (1, 1), 1)
    assert winograd.applies(x, torch.randn(36, 256, 3, 3), *geometry)  # the box predictor
    assert winograd.applies(torch.randn(1, 128, 16, 16), torch.randn(128, 128, 3, 3), *geometry)  # res3
    assert not winograd.applies(torch.randn(1, 64, 16, 16), torch.randn(64, 64, 3, 3), *geometry)  # res2: slower
    assert not winograd.applies(x, torch.randn(16, 256, 3, 3), *geometry)
    assert not winograd.applies(x.bfloat16(), w.bfloat16(), *geometry)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not winograd.applies(x, w, *geometry)


def test_a_per_call_transform_is_used_from_min_pixels_per_transform_up_to_max_bytes():
    x, weight, bias = conv_case(1, 256, 256, 24, 24)  # 576 pixels >= 512
    geometry = ((1, 1), (1, 1), (1, 1), 1)
    assert torch.equal(winograd.conv2d(x, weight, bias, *geometry), winograd.winograd_conv2d(x, winograd.transform_filter(weight), bias))
    assert torch.equal(winograd.conv2d(x, weight, bias, *geometry, winograd=False), F.conv2d(x, weight, bias, 1, 1))
    small = x[:, :, :20, :20]  # 400 pixels
    assert torch.equal(winograd.conv2d(small, weight, bias, *geometry), F.conv2d(small, weight, bias, 1, 1))
    # res5's 512 -> 512 filters transformed are 36 MiB > MAX_BYTES_PER_TRANSFORM: direct
    x, weight, bias = conv_case(1, 512, 512, 24, 24)
    assert torch.equal(winograd.conv2d(x, weight, bias, *geometry), F.conv2d(x, weight, bias, 1, 1))


def r50_cfg(winograd_on):
    """An R50-FPN of the project's config with random weights (256-channel FPN and head)."""
    return load_config("configs/retinanet_R50.yaml", [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RETINANET.NUM_CLASSES", 80,
        "MODEL.RETINA_PLUGIN.WINOGRAD", winograd_on,
    ])  # fmt: skip


def scale_predictors(model, image, seed=1):
    """
    New random weights for the head's predictors, scaled to their inputs on `image`: logits
    ~ N(-4, 1) and deltas ~ N(0, 0.2^2), so that many anchors of varied scores pass 0.05.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        features = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        features = [features[f] for f in model.head_in_features]
        for subnet, conv, std in ((model.head.cls_subnet, model.head.cls_score, 1.0), (model.head.bbox_subnet, model.head.bbox_pred, 0.2)):
            rms = torch.cat([subnet(x).flatten() for x in features]).pow(2).mean().sqrt()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std / (rms * conv.weight[0].numel() ** 0.5))
            conv.bias.zero_()
        model.head.cls_score.bias.fill_(-4.0)


def r50_pair(image):
    """
    (direct, winograd) R50-FPN models holding the same weights, eval mode: FrozenBN statistics
    from `image` (as a pretrained ResNet's) and a head giving many varied detections.
    """
    torch.manual_seed(0)
    direct = build_model(r50_cfg(False)).eval()
    calibrate_frozen_batchnorm(direct, [{"image": image}])
    scale_predictors(direct, image)
    fast = build_model(r50_cfg(True)).eval()
    fast.load_state_dict(direct.state_dict())
    return direct, fast


def test_r50_fpn_gives_the_direct_convolutions_detections():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(3, 192, 288, generator=g) * 255
    direct, fast = r50_pair(image)
    convs = [m for m in fast.backbone.modules() if isinstance(m, InferenceConv2d)]
    assert all(m.winograd for m in convs)
    assert not any(m.winograd for m in direct.backbone.modules() if isinstance(m, InferenceConv2d))
    assert sum(isinstance(m, FrozenBNFoldedConv2d) for m in convs) == 53  # the whole R50, folded
    calls = []
    original = winograd.winograd_conv2d
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "winograd_conv2d", lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
        out = fast([{"image": image}])[0]["instances"]
        assert len(calls) > 0
        ref = direct([{"image": image}])[0]["instances"]
    # per level the head's 10 convs (4 + 4 + both predictors); of the convs that transform
    # their filters per call, res3's 4 and the FPN's output on P3 (24x36 >= MIN_PIXELS_PER_TRANSFORM),
    # while res4's and the FPN's on P4/P5 (12x18 and smaller) stay direct
    assert len(calls) == 10 * 5 + 4 + 1, len(calls)
    assert len(ref) >= 50
    result = compare_detections(out, ref, min_iou=0.999, score_atol=1e-4)
    assert result["match"] and result["ties"] <= 2, result


def test_training_export_and_hooks_keep_the_direct_convolution():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 128, 128, generator=g)
    direct, fast = r50_pair(x[0] * 255)
    with torch.no_grad():
        features = fast.backbone(x)
        head_in = [features[f] for f in fast.head_in_features]
        expected = direct.head(head_in)
        # with autograd on, the head is the direct convolution exactly
        with torch.enable_grad():
            logits, deltas = fast.head(head_in)
        assert all(torch.equal(a, b) for a, b in zip(logits + deltas, expected[0] + expected[1]))
        # a traced head (TorchScript and ONNX export) holds the convolutions, not the Winograd products
        traced = torch.jit.trace(fast.head, (head_in,), check_trace=False)
        nodes = [n.kind() for n in traced.inlined_graph.nodes()]
        assert nodes.count("aten::_convolution") == 10 * len(head_in) and "aten::bmm" not in nodes
        # a forward hook on a conv (int8 calibration records inputs so) sees that conv called
        seen = []
        handle = fast.head.cls_score.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
        fast.head(head_in)
        handle.remove()
        assert len(seen) == len(head_in)
