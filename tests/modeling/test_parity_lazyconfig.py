"""
Parity with Detectron2's built-in RetinaNet for LazyConfigs: Detectron2's zoo LazyConfig
COCO-Detection/retinanet_R_50_FPN_1x.py, switched by `as_retinanet_plugin` (docs/lazyconfig.md),
builds RetinaNetPlugin with every setting of the zoo's node, and with the same weights gives the
same losses and detections (test_parity.py does the same for the YAML switch).
"""
import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNet

from retina_plugin import RetinaNetPlugin
from retina_plugin.config.lazy_model import as_retinanet_plugin
from test_parity import compare_pair

pytestmark = pytest.mark.usefixtures("single_thread")


def zoo_model():
    """The model node of Detectron2's zoo LazyConfig, as a user loads it."""
    return model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.py").model


def build_pair(zoo):
    """Detectron2's RetinaNet from the zoo node and RetinaNetPlugin from the one-liner, holding the same weights."""
    ours_node = as_retinanet_plugin(zoo)
    torch.manual_seed(0)
    ref = instantiate(zoo)
    torch.manual_seed(1)  # different init: the weights must come from the state_dict
    ours = instantiate(ours_node)
    assert type(ref) is RetinaNet and type(ours) is RetinaNetPlugin
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ref, ours


def post_clamp(model):
    return model.postprocess.box2box_transform.scale_clamp


def assert_same_settings(ref, ours):
    """Every setting of Detectron2's RetinaNet, where RetinaNetPlugin keeps it."""
    assert type(ours.backbone) is type(ref.backbone) and type(ours.anchor_generator) is type(ref.anchor_generator)
    assert ours.backbone.output_shape() == ref.backbone.output_shape()
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == [n for n, p in ref.named_parameters() if p.requires_grad]
    for ours_anchors, ref_anchors in zip(ours.anchor_generator.cell_anchors, ref.anchor_generator.cell_anchors):
        assert torch.equal(ours_anchors, ref_anchors)
    assert ours.anchor_generator.strides == ref.anchor_generator.strides and ours.anchor_generator.offset == ref.anchor_generator.offset
    matcher, ref_matcher = ours.anchor_matcher, ref.anchor_matcher
    assert (matcher.thresholds, matcher.labels, matcher.allow_low_quality_matches) == (
        ref_matcher.thresholds, ref_matcher.labels, ref_matcher.allow_low_quality_matches
    )  # fmt: skip
    head = ours.head
    assert head.num_classes == ours.num_classes == ref.num_classes
    assert (head.focal_loss_alpha, head.focal_loss_gamma, head.smooth_l1_beta, head.box_reg_loss_type) == (
        ref.focal_loss_alpha, ref.focal_loss_gamma, ref.smooth_l1_beta, ref.box_reg_loss_type
    )  # fmt: skip
    assert head.box2box_transform.weights == ours.postprocess.box2box_transform.weights == ref.box2box_transform.weights
    assert head.box2box_transform.scale_clamp == post_clamp(ours) == ref.box2box_transform.scale_clamp
    post = ours.postprocess
    assert (post.score_thresh, post.topk_candidates, post.nms_thresh, post.detections_per_image) == (
        ref.test_score_thresh, ref.test_topk_candidates, ref.test_nms_thresh, ref.max_detections_per_image
    )  # fmt: skip
    assert ours.head_in_features == ref.head_in_features and ours.input_format == ref.input_format
    assert torch.equal(ours.pixel_mean, ref.pixel_mean) and torch.equal(ours.pixel_std, ref.pixel_std)
    assert ours.vis_period == ref.vis_period
    # The head's shape: subnets, norm layers and output convs have the same parameters.
    assert {k: v.shape for k, v in ours.head.state_dict().items()} == {k: v.shape for k, v in ref.head.state_dict().items()}


def test_zoo_lazyconfig_switches_by_the_one_liner(make_batch):
    ref, ours = build_pair(zoo_model())
    assert_same_settings(ref, ours)
    assert ours.head.cls_score.out_channels == 9 * 80  # the zoo's 9 anchors and 80 classes
    assert ours.head.smooth_l1_beta == 0.0  # Detectron2's default, not the plugin's configs' 0.11
    assert ours.backbone.bottom_up.stem.conv1.weight.requires_grad is False  # the zoo's freeze_at 2
    compare_pair(ref, ours, make_batch, num_classes=80, sizes=((96, 128), (64, 96)))


def test_every_setting_of_the_zoo_node_is_carried_over(make_batch):
    zoo = zoo_model()
    # A ResNet-18 (for time) and another value for every setting the zoo node has or defaults.
    stages = zoo.backbone.bottom_up.stages
    stages.depth, stages.norm = 18, "GN"
    del stages.stride_in_1x1
    zoo.backbone.bottom_up.stem.norm = "GN"
    zoo.backbone.bottom_up.freeze_at = 0
    zoo.backbone.top_block.in_channels = 512
    zoo.backbone.out_channels = 64
    zoo.head_in_features = ["p3", "p4", "p5"]
    zoo.head.input_shape = [ShapeSpec(channels=64)] * 3
    zoo.head.conv_dims, zoo.head.norm, zoo.head.prior_prob, zoo.head.num_anchors = [64, 64], "GN", 0.05, 8
    zoo.anchor_generator.sizes = [[24, 48], [48, 96], [96, 192]]
    zoo.anchor_generator.aspect_ratios = [0.25, 1.0, 2.0, 4.0]
    zoo.anchor_generator.strides, zoo.anchor_generator.offset = [8, 16, 32], 0.5
    zoo.anchor_matcher.thresholds, zoo.anchor_matcher.labels = [0.3, 0.6], [0, 0, 1]
    zoo.box2box_transform.weights = [10.0, 10.0, 5.0, 5.0]
    zoo.box2box_transform.scale_clamp = 4.0
    zoo.num_classes = 7
    zoo.focal_loss_alpha, zoo.focal_loss_gamma = 0.5, 1.5
    zoo.smooth_l1_beta, zoo.box_reg_loss_type = 0.2, "giou"
    zoo.test_score_thresh, zoo.test_topk_candidates, zoo.test_nms_thresh = 0.1, 40, 0.3
    zoo.max_detections_per_image = 7
    zoo.pixel_mean, zoo.pixel_std, zoo.input_format = [120.0, 110.0, 100.0], [50.0, 60.0, 70.0], "RGB"
    zoo.vis_period = 0
    ref, ours = build_pair(zoo)
    assert_same_settings(ref, ours)
    assert ours.head.cls_score.out_channels == 8 * 7 and ours.input_format == "RGB"
    compare_pair(ref, ours, make_batch, num_classes=7, sizes=((96, 128), (64, 96)))
