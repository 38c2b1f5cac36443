"""The plugin's components one by one: anchors, head, backbone, registries, edge cases, config checks."""
import copy
import math
import re

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec, batched_nms
from detectron2.modeling import (
    ANCHOR_GENERATOR_REGISTRY,
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    build_anchor_generator,
    build_backbone,
    build_model,
)
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from retina_plugin.anchor_generator import anchor_tensors
from retina_plugin import (
    RETINA_HEAD_REGISTRY,
    RETINA_POSTPROCESS_REGISTRY,
    DecodeAndNMS,
    FocalLossHead,
    RetinaAnchorGenerator,
    RetinaNetPlugin,
    build_retina_plugin_resnet_fpn_backbone,
)

pytestmark = pytest.mark.usefixtures("single_thread")

STRIDES = [8, 16, 32, 64, 128]
# Feature-map sizes of a 256x320 input at strides 8..128 (P3 .. P7).
FEATURE_SIZES_256x320 = [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]


def level_shapes(channels=256):
    return [ShapeSpec(channels=channels, stride=s) for s in STRIDES]


def zero_features(sizes, n=1, channels=256):
    return [torch.zeros(n, channels, h, w) for h, w in sizes]


# ---------------------------------------------------------------- anchors


def test_anchor_counts_sizes_and_aspect_ratios(small_cfg):
    gen = build_anchor_generator(small_cfg, level_shapes())
    assert isinstance(gen, RetinaAnchorGenerator)
    assert gen.num_cell_anchors == [9] * 5
    assert gen.num_anchors == [9] * 5

    anchors = gen(zero_features(FEATURE_SIZES_256x320))
    assert len(anchors) == 5
    for (h, w), boxes in zip(FEATURE_SIZES_256x320, anchors):
        assert isinstance(boxes, Boxes)
        assert boxes.tensor.shape == (h * w * 9, 4)

    scales = [2 ** (i / 3) for i in range(3)]
    for level, cell in enumerate(gen.cell_anchors):
        assert cell.shape == (9, 4)
        cell = cell.double()
        w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
        # centred on (0, 0)
        torch.testing.assert_close(cell[:, 0] + cell[:, 2], torch.zeros(9, dtype=torch.float64), atol=1e-4, rtol=0)
        torch.testing.assert_close(cell[:, 1] + cell[:, 3], torch.zeros(9, dtype=torch.float64), atol=1e-4, rtol=0)
        for j in range(9):
            scale, ratio = scales[j // 3], [0.5, 1.0, 2.0][j % 3]
            assert (w[j] * h[j]).item() == pytest.approx((32 * 2**level * scale) ** 2, rel=1e-5)
            assert (h[j] / w[j]).item() == pytest.approx(ratio, rel=1e-5)

    # Location (y, x), anchor a of a level sits at row (y * W + x) * A + a, centred at (x, y) * stride.
    level, (y, x), a = 1, (3, 7), 4
    W = FEATURE_SIZES_256x320[level][1]
    box = anchors[level].tensor[(y * W + x) * 9 + a]
    center = torch.stack([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    torch.testing.assert_close(center, torch.tensor([x * 16.0, y * 16.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(box - box.new_tensor([x * 16.0, y * 16.0] * 2), list(gen.cell_anchors)[level][a])


def test_anchors_equal_detectron2_default_generator(small_cfg):
    sizes = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    ref = DefaultAnchorGenerator(sizes=sizes, aspect_ratios=[[0.5, 1.0, 2.0]], strides=STRIDES, offset=0.0)
    ours = build_anchor_generator(small_cfg, level_shapes())
    for feature_sizes in (FEATURE_SIZES_256x320, [(20, 28), (10, 14), (5, 7), (3, 4), (2, 2)]):
        features = zero_features(feature_sizes, n=2)
        for a, b in zip(ours(features), ref(features)):
            assert torch.equal(a.tensor, b.tensor)
    for a, b in zip(ours.cell_anchors, ref.cell_anchors):
        assert torch.equal(a, b)


def test_anchor_cache_returns_same_tensors(small_cfg):
    gen = build_anchor_generator(small_cfg, level_shapes())
    features = zero_features(FEATURE_SIZES_256x320)
    first = anchor_tensors(gen, features)
    second = anchor_tensors(gen, zero_features(FEATURE_SIZES_256x320, n=3))  # batch size does not matter
    assert all(a is b for a, b in zip(first, second))
    other = anchor_tensors(gen, zero_features([(20, 28), (10, 14), (5, 7), (3, 4), (2, 2)]))
    assert other[0].shape == (20 * 28 * 9, 4)
    # the first size is still cached and unchanged
    assert all(a is b for a, b in zip(first, anchor_tensors(gen, features)))


# ---------------------------------------------------------------- head


def build_head(cfg, num_anchors=9):
    return RETINA_HEAD_REGISTRY.get(cfg.MODEL.RETINA_PLUGIN.HEAD_NAME)(cfg, level_shapes(), num_anchors)


@pytest.mark.parametrize("prior", [0.01, 0.2])
def test_initial_foreground_probability_is_the_prior(small_cfg, prior):
    small_cfg.MODEL.RETINANET.PRIOR_PROB = prior
    torch.manual_seed(0)
    head = build_head(small_cfg)
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(1, 256, h, w, generator=g) for h, w in FEATURE_SIZES_256x320]
    with torch.no_grad():
        logits, _ = head(features)
    probs = torch.cat([l.sigmoid().reshape(-1) for l in logits])
    assert probs.mean().item() == pytest.approx(prior, abs=1e-3)
    torch.testing.assert_close(
        head.cls_score.bias, torch.full_like(head.cls_score.bias, -math.log((1 - prior) / prior))
    )


@pytest.mark.parametrize("norm", ["", "GN", "BN"])
def test_head_output_shapes_and_anchor_order(small_cfg, norm):
    small_cfg.MODEL.RETINANET.NORM = norm
    torch.manual_seed(0)
    head = build_head(small_cfg)
    assert isinstance(head, FocalLossHead)
    g = torch.Generator().manual_seed(1)
    sizes = [(10, 14), (5, 7), (3, 4), (2, 2), (1, 1)]
    features = [torch.randn(2, 256, h, w, generator=g) for h, w in sizes]
    for mode in ("train", "eval"):
        head.train(mode == "train")
        logits, deltas = head(features)
        assert len(logits) == len(deltas) == 5
        for (h, w), lg, dl in zip(sizes, logits, deltas):
            assert lg.shape == (2, h * w * 9, 3)
            assert dl.shape == (2, h * w * 9, 4)
            assert torch.isfinite(lg).all() and torch.isfinite(dl).all()
    if norm == "":
        # row (y * W + x) * A + a, column k is channel a * K + k of the conv output at (y, x)
        with torch.no_grad():
            raw_cls = head.cls_score(head.cls_subnet(features[1]))
            raw_box = head.bbox_pred(head.bbox_subnet(features[1]))
        W = sizes[1][1]
        n, y, x, a = 1, 3, 5, 5
        torch.testing.assert_close(logits[1][n, (y * W + x) * 9 + a], raw_cls[n, a * 3 : a * 3 + 3, y, x])
        torch.testing.assert_close(deltas[1][n, (y * W + x) * 9 + a], raw_box[n, a * 4 : a * 4 + 4, y, x])


# ---------------------------------------------------------------- registries and backbone


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


# ---------------------------------------------------------------- edge cases of the whole model


def test_image_without_ground_truth_trains(small_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(small_cfg).train()
    batch = make_batch(counts=(0,), sizes=((128, 160),))
    with EventStorage() as storage:
        losses = model(batch)
        assert storage.latest()["num_pos_anchors"][0] == 0
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    grad = model.head.cls_score.bias.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # with no foreground at all the box branch gets no gradient signal
    assert model.head.bbox_pred.weight.grad is None or not model.head.bbox_pred.weight.grad.any()

    anchors = torch.cat(anchor_tensors(model.anchor_generator,
        [torch.zeros(1, 1, h, w) for h, w in [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]]
    ))
    labels, boxes = model.label_anchors(anchors, [batch[0]["instances"]])
    assert labels.shape == (1, len(anchors)) and boxes.shape == (1, len(anchors), 4)
    assert (labels == 3).all()


def test_empty_image_in_a_mixed_batch_is_all_background(small_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(small_cfg)
    batch = make_batch(counts=(2, 0))
    anchors = torch.cat(anchor_tensors(model.anchor_generator,
        [torch.zeros(1, 1, math.ceil(160 / s), math.ceil(224 / s)) for s in STRIDES]
    ))
    labels, _ = model.label_anchors(anchors, [b["instances"] for b in batch])
    assert (labels[1] == 3).all()
    assert ((labels[0] >= 0) & (labels[0] < 3)).sum() >= 2  # every gt box keeps at least its best anchor


def test_training_outside_event_storage(small_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(small_cfg).train()
    losses = model(make_batch(counts=(2,), sizes=((128, 160),)))
    assert all(torch.isfinite(v) for v in losses.values())


def test_no_detection_gives_empty_instances(small_cfg, make_batch):
    small_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.99
    torch.manual_seed(0)
    model = build_model(small_cfg).eval()
    batch = make_batch(counts=(0, 0), sizes=((160, 224), (128, 200)))
    inputs = [{"image": batch[0]["image"]}, {"image": batch[1]["image"], "height": 256, "width": 400}]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for out, size in zip(outputs, [(160, 224), (256, 400)]):
        inst = out["instances"]
        assert isinstance(inst, Instances)
        assert len(inst) == 0
        assert inst.image_size == size
        assert inst.pred_boxes.tensor.shape == (0, 4)
        assert inst.scores.shape == (0,)
        assert inst.pred_classes.shape == (0,)
        assert inst.pred_classes.dtype == torch.int64


# ---------------------------------------------------------------- postprocess


def reference_postprocess(anchors, logits, deltas, image_size, thresh, topk, nms, max_det, transform):
    """The paper's inference, written plainly: per level sigmoid, threshold, top-k, decode; NMS."""
    boxes_all, scores_all, classes_all = [], [], []
    for anchors_i, logits_i, deltas_i in zip(anchors, logits, deltas):
        scores = logits_i.sigmoid()
        keep = scores > thresh
        idx = torch.nonzero(keep)  # (M, 2): anchor, class
        s = scores[keep]
        s, order = s.topk(min(topk, len(s)))
        idx = idx[order]
        boxes_all.append(transform.apply_deltas(deltas_i[idx[:, 0]], anchors_i[idx[:, 0]]))
        scores_all.append(s)
        classes_all.append(idx[:, 1])
    boxes, scores, classes = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(classes_all)
    keep = batched_nms(boxes, scores, classes, nms)[:max_det]
    return Instances(image_size, pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep])


def assert_same_instances(a, b, atol=1e-5):
    assert len(a) == len(b)
    assert a.image_size == b.image_size
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=atol)
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=atol)


@pytest.mark.parametrize("topk, max_det", [(1000, 100), (50, 30), (20, 1000), (5000, 2000)])
def test_decode_and_nms_matches_reference(small_cfg, topk, max_det):
    node = small_cfg.MODEL.RETINANET
    node.NUM_CLASSES = 5
    node.TOPK_CANDIDATES_TEST = topk
    small_cfg.TEST.DETECTIONS_PER_IMAGE = max_det
    post = DecodeAndNMS(small_cfg)
    transform = Box2BoxTransform(weights=node.BBOX_REG_WEIGHTS)

    sizes = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]  # a 96x128 image
    gen = build_anchor_generator(small_cfg, level_shapes())
    anchors = anchor_tensors(gen, zero_features(sizes))
    counts = [len(a) for a in anchors]
    n_images, total = 2, sum(counts)
    g = torch.Generator().manual_seed(0)
    # distinct logits (so no two scores tie), spread over [-6, 6]: most pass the 0.05 threshold
    flat = torch.linspace(-6, 6, n_images * total * 5)[torch.randperm(n_images * total * 5, generator=g)]
    logits = list(flat.view(n_images, total, 5).split(counts, dim=1))
    deltas = list((torch.randn(n_images, total, 4, generator=g) * 0.3).split(counts, dim=1))
    assert max(int((l[0].sigmoid() > 0.05).sum()) for l in logits) > min(topk, 1000)  # top-k does cut

    image_size, output_size = (96, 128), (192, 200)
    results = post(anchors, logits, deltas, [image_size] * n_images, [image_size, output_size])
    assert len(results) == n_images
    for i in range(n_images):
        ours = post.detect_single_image(anchors, [l[i] for l in logits], [d[i] for d in deltas], image_size)
        ref = reference_postprocess(
            anchors, [l[i] for l in logits], [d[i] for d in deltas], image_size,
            node.SCORE_THRESH_TEST, topk, node.NMS_THRESH_TEST, max_det, transform,
        )
        assert len(ref) > 10
        assert_same_instances(ours, ref)
        assert (ours.scores > node.SCORE_THRESH_TEST).all()
        assert (ours.scores[:-1] >= ours.scores[1:]).all()
        assert len(ours) <= min(max_det, topk * len(anchors))
        out_h, out_w = [image_size, output_size][i]
        assert_same_instances(results[i], detector_postprocess(ref, out_h, out_w))


def test_decode_and_nms_no_candidates(small_cfg):
    post = DecodeAndNMS(small_cfg)
    gen = build_anchor_generator(small_cfg, level_shapes())
    sizes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    anchors = anchor_tensors(gen, zero_features(sizes))
    logits = [torch.full((1, len(a), 3), -10.0) for a in anchors]
    deltas = [torch.zeros(1, len(a), 4) for a in anchors]
    (res,) = post(anchors, logits, deltas, [(32, 32)], [(64, 48)])
    assert len(res) == 0 and res.image_size == (64, 48)


# ---------------------------------------------------------------- config checks at build time


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256]]),
        ("MODEL.ANCHOR_GENERATOR.SIZES", [[32, 40], [64], [128], [256], [512]]),
        ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", []),
        ("MODEL.ANCHOR_GENERATOR.OFFSET", 1.0),
        ("MODEL.RETINANET.IOU_THRESHOLDS", [0.6, 0.5]),
        ("MODEL.RETINANET.IOU_LABELS", [0, 1]),
        ("MODEL.RETINANET.IOU_LABELS", [0, 2, 1]),
        ("MODEL.RETINANET.NUM_CLASSES", 0),
        ("MODEL.RETINANET.NORM", "XYZ"),
        ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "l2"),
        ("MODEL.RETINANET.PRIOR_PROB", 0.0),
        ("MODEL.RETINANET.FOCAL_LOSS_GAMMA", -1.0),
        ("MODEL.RETINANET.TOPK_CANDIDATES_TEST", 0),
        ("TEST.DETECTIONS_PER_IMAGE", 0),
        ("MODEL.RETINA_PLUGIN.P6_SOURCE", "res4"),
        ("MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", "int4"),
        ("MODEL.RETINA_PLUGIN.INT8_CALIBRATION", ""),
    ],
)
def test_bad_config_raises_at_build_time(small_cfg, key, value):
    node_name, name = key.rsplit(".", 1)
    node = small_cfg
    for part in node_name.split("."):
        node = node[part]
    node[name] = value
    if name == "INT8_CALIBRATION":  # int8 needs the calibration file
        small_cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "int8"
    with pytest.raises(ValueError) as excinfo:
        build_model(small_cfg)
    message = str(excinfo.value)
    assert f"cfg.{key} = {value!r}" in message or (name == "INT8_CALIBRATION" and "INT8_CALIBRATION" in message)


@pytest.mark.parametrize("old, new", [
    ("NUM_CLASSES", "MODEL.RETINANET.NUM_CLASSES"),
    ("ANCHOR_SIZES", "MODEL.ANCHOR_GENERATOR.SIZES"),
    ("FG_IOU_THRESHOLD", "MODEL.RETINANET.IOU_THRESHOLDS"),
    ("SMOOTH_L1_BETA", "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA"),
    ("DETECTIONS_PER_IMAGE", "TEST.DETECTIONS_PER_IMAGE"),
])
def test_moved_key_set_in_code_fails_at_build_naming_the_new_key(small_cfg, old, new):
    small_cfg.MODEL.RETINA_PLUGIN[old] = 5
    with pytest.raises(ValueError, match=re.escape(f"cfg.MODEL.RETINA_PLUGIN.{old} = 5: is not a key of MODEL.RETINA_PLUGIN; it moved to {new}")):
        build_model(small_cfg)


def test_bad_config_also_rejected_by_backbone_builder(small_cfg):
    small_cfg.MODEL.RETINA_PLUGIN.P6_SOURCE = "res4"
    with pytest.raises(ValueError, match="P6_SOURCE"):
        build_backbone(small_cfg)


@pytest.mark.parametrize("channels_last", [True, False])
def test_inference_dtype_bfloat16_runs_backbone_and_head_in_bf16(small_cfg, make_batch, channels_last):
    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.2  # random weights: scores near 0.2, many detections
    small_cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "bfloat16"
    small_cfg.MODEL.RETINA_PLUGIN.CHANNELS_LAST = channels_last
    model = build_model(small_cfg).eval()
    seen = []
    model.head.cls_score.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    batch = [{"image": x["image"]} for x in make_batch(counts=(0,), sizes=((128, 160),))]
    with torch.no_grad():
        instances = model(batch)[0]["instances"]
    assert seen and set(seen) == {torch.bfloat16}
    assert len(instances) > 0
    assert instances.scores.dtype == torch.float32 and instances.pred_boxes.tensor.dtype == torch.float32
    # Training is never affected by the inference precision.
    model.train()
    seen.clear()
    with EventStorage():
        model(make_batch(counts=(1,), sizes=((128, 160),)))
    assert set(seen) == {torch.float32}


def test_frozen_bn_folded_into_the_convolution_at_inference():
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    from retina_plugin.backbone import FrozenBNFoldedConv2d, fold_frozen_batchnorm

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


def test_vis_period_puts_gt_and_detections_in_the_event_storage(small_cfg, make_batch, single_thread):
    small_cfg.VIS_PERIOD = 2
    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.5  # random init scores ~0.5: there are detections to draw
    model = build_model(small_cfg).train()
    batch = make_batch(counts=(3, 1), sizes=((96, 128), (64, 80)))
    with EventStorage(start_iter=1) as storage:
        model(batch)  # iteration 1: not a multiple of VIS_PERIOD
        assert storage._vis_data == []
        storage.iter = 2
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    ((name, picture, iteration),) = storage._vis_data
    assert iteration == 2 and "GT bounding boxes" in name
    assert picture.shape == (3, 2 * 96, 128) and picture.dtype == np.uint8
    image = batch[0]["image"].flip(0).numpy().astype(np.uint8)  # BGR input -> RGB picture
    top, bottom = picture[:, :96].astype(int), picture[:, 96:].astype(int)
    assert (np.abs(top - image) > 40).any(axis=0).sum() > 100  # ground-truth boxes drawn
    assert (np.abs(bottom - image) > 40).any(axis=0).sum() > 100  # detections drawn
