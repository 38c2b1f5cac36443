"""The registered components and the ResNet-FPN backbone (P3-P7, folded FrozenBN)."""
import copy

import pytest
import torch
from detectron2.modeling import (
    ANCHOR_GENERATOR_REGISTRY,
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    build_backbone,
    build_model,
)

from retina_plugin import (
    RETINA_HEAD_REGISTRY,
    RETINA_POSTPROCESS_REGISTRY,
    DecodeAndNMS,
    FocalLossHead,
    RetinaAnchorGenerator,
    RetinaNetPlugin,
    build_retina_plugin_resnet_fpn_backbone,
)

from levels import FEATURE_SIZES_256x320, STRIDES

pytestmark = pytest.mark.usefixtures("single_thread")


def test_components_built_from_registry_names(small_cfg):
    assert META_ARCH_REGISTRY.get("RetinaNetPlugin") is RetinaNetPlugin
    assert BACKBONE_REGISTRY.get("build_retina_plugin_resnet_fpn_backbone") is build_retina_plugin_resnet_fpn_backbone
    assert ANCHOR_GENERATOR_REGISTRY.get("RetinaAnchorGenerator") is RetinaAnchorGenerator
    assert RETINA_HEAD_REGISTRY.get("FocalLossHead") is FocalLossHead
    assert RETINA_POSTPROCESS_REGISTRY.get("DecodeAndNMS") is DecodeAndNMS

    postprocess = RETINA_POSTPROCESS_REGISTRY.get("DecodeAndNMS")(small_cfg)
    assert isinstance(postprocess, DecodeAndNMS)
    assert postprocess.score_thresh == small_cfg.MODEL.RETINANET.SCORE_THRESH_TEST

    torch.manual_seed(0)
    model = build_model(small_cfg)
    assert isinstance(model, RetinaNetPlugin)
    assert isinstance(model.head, FocalLossHead)
    assert isinstance(model.postprocess, DecodeAndNMS)
    assert isinstance(model.anchor_generator, RetinaAnchorGenerator)
    assert model.head.num_classes == 3
    assert model.head.cls_score.out_channels == 9 * 3
    assert model.head.bbox_pred.out_channels == 9 * 4


@pytest.mark.parametrize("p6_source, p6_in_channels", [("res5", 512), ("p5", 256)])
def test_backbone_p3_to_p7(small_cfg, p6_source, p6_in_channels):
    small_cfg.MODEL.RETINA_PLUGIN.P6_SOURCE = p6_source
    torch.manual_seed(0)
    backbone = build_backbone(small_cfg)
    shapes = backbone.output_shape()
    assert sorted(shapes) == ["p3", "p4", "p5", "p6", "p7"]
    assert [shapes[f"p{i}"].stride for i in range(3, 8)] == STRIDES
    assert all(shapes[f"p{i}"].channels == 256 for i in range(3, 8))
    top = backbone.top_block
    assert top.in_feature == p6_source
    assert top.p6.in_channels == p6_in_channels
    assert top.p6.out_channels == top.p7.in_channels == top.p7.out_channels == 256

    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        out = backbone(x)
        for (h, w), i in zip(FEATURE_SIZES_256x320, range(3, 8)):
            assert out[f"p{i}"].shape == (1, 256, h, w)
        # P6 really comes from the configured source, P7 from ReLU(P6)
        source = backbone.bottom_up(x)["res5"] if p6_source == "res5" else out["p5"]
        torch.testing.assert_close(out["p6"], top.p6(source))
        torch.testing.assert_close(out["p7"], top.p7(torch.relu(out["p6"])))


def test_bad_config_also_rejected_by_backbone_builder(small_cfg):
    small_cfg.MODEL.RETINA_PLUGIN.P6_SOURCE = "res4"
    with pytest.raises(ValueError, match="P6_SOURCE"):
        build_backbone(small_cfg)


def test_frozen_bn_folded_into_the_convolution_at_inference():
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    from retina_plugin.modeling.backbone import FrozenBNFoldedConv2d, fold_frozen_batchnorm

    torch.manual_seed(0)
    reference = Conv2d(16, 32, 3, padding=1, bias=True, norm=FrozenBatchNorm2d(32)).eval()
    reference.norm.weight.uniform_(0.5, 2.0)
    reference.norm.bias.normal_()
    reference.norm.running_mean.normal_()
    reference.norm.running_var.uniform_(0.1, 3.0)
    folded = copy.deepcopy(reference)
    fold_frozen_batchnorm(folded)
    assert type(folded) is FrozenBNFoldedConv2d
    assert folded.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 16, 20, 24)
    with torch.no_grad():
        expected = reference(x)
        got = folded(x)
    assert not torch.equal(got, expected)  # it did take the folded path
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # With autograd on it is Detectron2's Conv2d, bit for bit.
    assert torch.equal(folded(x), reference(x))
