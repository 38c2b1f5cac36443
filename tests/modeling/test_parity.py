"""
Parity with Detectron2's built-in RetinaNet, the reference: one Detectron2 config, with only
MODEL.META_ARCHITECTURE switched to RetinaNetPlugin, gives the same state_dict (so model-zoo
checkpoints load strictly), the same training losses and gradients and the same detections.
"""
import pytest
import torch
from detectron2 import model_zoo
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import EventStorage

from retina_plugin import RetinaNetPlugin, load_config
from retina_plugin.modeling.anchor_generator import anchor_tensors
from retina_plugin.compare import compare_detections

pytestmark = pytest.mark.usefixtures("single_thread")

# A few parameters of the head, the FPN and the P6/P7 block. (Not the ResNet bottom-up: in a
# randomly initialised ResNet with FrozenBN the activations are large and float32 rounding
# differences from different conv kernels, e.g. RETINA_PLUGIN.CHANNELS_LAST, flip the odd ReLU
# and move res3/res5 gradients by up to ~1e-2 from run to run with identical math. The FPN's
# gradients, which are what flows into the bottom-up, are checked strictly.)
GRAD_PARAMS = [
    "head.cls_score.weight",
    "head.cls_score.bias",
    "head.bbox_pred.weight",
    "head.bbox_pred.bias",
    "head.cls_subnet.0.weight",
    "head.bbox_subnet.0.weight",
    "backbone.top_block.p6.weight",
    "backbone.top_block.p7.weight",
    "backbone.fpn_output3.weight",
    "backbone.fpn_output5.bias",
    "backbone.fpn_lateral5.weight",
    "backbone.fpn_lateral3.weight",
]


ZOO_CONFIG = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"


def zoo_cfg(name=ZOO_CONFIG, opts=()):
    """A Detectron2 model-zoo RetinaNet config, as a user has it, on the CPU with random weights."""
    return load_config(model_zoo.get_config_file(name), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])


def parity_cfgs(depth=18, norm="", box_loss="smooth_l1", num_classes=3, opts=(), parts="detectron2"):
    """
    Detectron2's zoo RetinaNet R50-FPN 1x config with a few keys changed, and the same config
    with only META_ARCHITECTURE switched to RetinaNetPlugin: (built-in's cfg, plugin's cfg).
    With parts="plugin" the plugin also uses its own backbone and anchor generator (the
    project's configs), the built-in Detectron2's.
    """
    cfg = zoo_cfg(opts=[
        "MODEL.RESNETS.DEPTH", depth,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64 if depth in (18, 34) else 256,
        "MODEL.RETINANET.NUM_CLASSES", num_classes,
        "MODEL.RETINANET.NORM", norm,
        "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", box_loss,
        "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", 0.11,
        *opts,
    ])
    assert cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    ours_cfg = cfg.clone()
    ours_cfg.MODEL.META_ARCHITECTURE = "RetinaNetPlugin"
    if parts == "plugin":
        ours_cfg.MODEL.BACKBONE.NAME = "build_retina_plugin_resnet_fpn_backbone"
        ours_cfg.MODEL.ANCHOR_GENERATOR.NAME = "RetinaAnchorGenerator"
    return cfg, ours_cfg


def build_pair(**kwargs):
    """The built-in and our model from one config, ours holding the built-in's weights."""
    ref_cfg, ours_cfg = parity_cfgs(**kwargs)
    return build_pair_from(ref_cfg, ours_cfg)


def build_pair_from(ref_cfg, ours_cfg):
    torch.manual_seed(0)
    ref = build_model(ref_cfg)
    torch.manual_seed(1)  # different init: the weights must come from the state_dict
    ours = build_model(ours_cfg)
    assert type(ref) is RetinaNet and type(ours) is RetinaNetPlugin
    # the one initial value not drawn at random: the prior-probability bias (paper section 4.1)
    assert torch.equal(ours.head.cls_score.bias, ref.head.cls_score.bias)
    # the same parameters train (MODEL.BACKBONE.FREEZE_AT, FrozenBN)
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == [
        n for n, p in ref.named_parameters() if p.requires_grad
    ]
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ref, ours


def assert_boxes_close(a, b, rel):
    """
    Every coordinate within `rel` of its box's largest coordinate: a box is decoded as
    centre -/+ size / 2, so a coordinate near 0 carries the rounding error of the centre and size.
    """
    assert a.shape == b.shape
    scale = b.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
    err = ((a - b).abs() / scale).max().item() if len(b) else 0.0
    assert err <= rel, err


def rel_close(a, b, rel):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return ((a - b).norm() <= rel * b.norm()).item()


# ---------------------------------------------------------------- state dict


@pytest.mark.parametrize("depth, norm", [(18, ""), (18, "GN"), (18, "BN"), (50, "")])
def test_state_dict_keys_shapes_and_strict_load(depth, norm):
    ref_cfg, ours_cfg = parity_cfgs(depth=depth, norm=norm, parts="plugin")
    torch.manual_seed(0)
    ref = build_model(ref_cfg)
    torch.manual_seed(1)
    ours = build_model(ours_cfg)
    sr, so = ref.state_dict(), ours.state_dict()
    assert sorted(sr) == sorted(so)
    for k in sr:
        assert sr[k].shape == so[k].shape, k
        assert sr[k].dtype == so[k].dtype, k
    result = ours.load_state_dict(sr, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in ours.state_dict().items():
        assert torch.equal(v, sr[k]), k


# ---------------------------------------------------------------- training


def train_in_lockstep(ref, ours, make_batch, iterations=2):
    """
    `iterations` SGD iterations of the reference; before each, our model gets the reference's
    current weights (so float rounding cannot accumulate), and both run forward and backward on
    the same batch. Each model keeps its own EMA loss normalizer across the iterations.
    Returns per iteration and model: losses, a few gradients, the normalizer, num_pos_anchors.
    """
    ref.train()
    ours.train()
    optimizer = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    records = []
    with EventStorage() as storage:
        for it in range(iterations):
            storage.iter = it
            ours.load_state_dict(ref.state_dict())
            batch = make_batch(counts=(3, 1, 0), sizes=((128, 192), (160, 128), (128, 160)), seed=1 + it)
            record = {}
            for name, model in (("ref", ref), ("ours", ours)):
                model.zero_grad()
                losses = model(batch)
                sum(losses.values()).backward()
                params = dict(model.named_parameters())
                record[name] = {
                    "losses": {k: v.item() for k, v in losses.items()},
                    "grads": {n: params[n].grad.detach().clone() for n in GRAD_PARAMS},
                    "normalizer": float(model.loss_normalizer),
                    "num_pos_anchors": storage.latest()["num_pos_anchors"][0],
                }
            records.append(record)
            optimizer.step()
    return records


@pytest.mark.parametrize("parts", ["detectron2", "plugin"])
@pytest.mark.parametrize("norm, box_loss", [("", "smooth_l1"), ("GN", "smooth_l1"), ("", "giou")])
def test_training_losses_and_gradients_match(make_batch, norm, box_loss, parts):
    ref, ours = build_pair(norm=norm, box_loss=box_loss, parts=parts)
    records = train_in_lockstep(ref, ours, make_batch)

    expected_normalizer = 100.0
    for it, rec in enumerate(records):
        r, o = rec["ref"], rec["ours"]
        assert set(o["losses"]) == set(r["losses"]) == {"loss_cls", "loss_box_reg"}
        for k in r["losses"]:
            assert r["losses"][k] > 0, (it, k)
            assert o["losses"][k] == pytest.approx(r["losses"][k], rel=1e-5), (it, k)
        assert o["num_pos_anchors"] == r["num_pos_anchors"] > 0
        # The EMA normalizer: 0.9 * previous + 0.1 * max(num_fg, 1), from 100.
        expected_normalizer = 0.9 * expected_normalizer + 0.1 * r["num_pos_anchors"] * 3
        assert o["normalizer"] == pytest.approx(r["normalizer"], rel=1e-12)
        assert o["normalizer"] == pytest.approx(expected_normalizer, rel=1e-9)
        for name in GRAD_PARAMS:
            assert r["grads"][name].abs().sum() > 0, (it, name)
            assert rel_close(o["grads"][name], r["grads"][name], 1e-4), (it, name)
    # the second iteration ran on updated weights and a larger normalizer
    assert records[1]["ref"]["normalizer"] != records[0]["ref"]["normalizer"]


def test_training_all_background_batch_matches(make_batch):
    ref, ours = build_pair()
    batch = make_batch(counts=(0, 0), sizes=((160, 224), (128, 200)))
    with EventStorage():
        r = ref.train()(batch)
        o = ours.train()(batch)
    assert o["loss_box_reg"].item() == r["loss_box_reg"].item() == 0.0
    assert o["loss_cls"].item() == pytest.approx(r["loss_cls"].item(), rel=1e-5)
    assert ours.loss_normalizer == pytest.approx(ref.loss_normalizer) == pytest.approx(90.1)


# ---------------------------------------------------------------- inference


def perturb_head(model, seed=0):
    """Confident, varied head outputs: many detections per image instead of a handful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.head.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.005)
        model.head.cls_score.bias.add_(2.0)  # prior 0.01 -> about 0.07 before the noise


def inference_inputs(make_batch):
    batch = make_batch(counts=(0, 0, 0), sizes=((160, 224), (128, 200), (150, 160)), seed=7)
    inputs = [{"image": b["image"]} for b in batch]
    # Detectron2's "height"/"width": the size to rescale the boxes to (the original image's).
    # The first image has none (its own size), the others are scaled up and down.
    inputs[1]["height"], inputs[1]["width"] = 256, 400
    inputs[2]["height"], inputs[2]["width"] = 100, 107
    return inputs


@pytest.mark.parametrize("parts", ["detectron2", "plugin"])
@pytest.mark.parametrize("norm", ["", "GN"])
def test_inference_matches(make_batch, norm, parts):
    ref, ours = build_pair(norm=norm, parts=parts)
    perturb_head(ref)
    ours.load_state_dict(ref.state_dict())
    ref.eval()
    ours.eval()
    inputs = inference_inputs(make_batch)
    with torch.no_grad():
        ref_out = ref(inputs)
        ours_out = ours(inputs)
    assert len(ours_out) == len(ref_out) == len(inputs)
    for x, r, o in zip(inputs, ref_out, ours_out):
        r, o = r["instances"], o["instances"]
        expected_size = (x.get("height", x["image"].shape[1]), x.get("width", x["image"].shape[2]))
        assert o.image_size == r.image_size == expected_size
        assert len(r) >= 20, len(r)  # many non-trivial detections
        assert len(o) == len(r)
        assert len(set(r.pred_classes.tolist())) > 1
        assert torch.equal(o.pred_classes, r.pred_classes)
        torch.testing.assert_close(o.scores, r.scores, rtol=1e-4, atol=1e-6)
        assert_boxes_close(o.pred_boxes.tensor, r.pred_boxes.tensor, rel=1e-4)
        assert set(o.get_fields()) == set(r.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        # boxes are rescaled to the output size (and clipped to it)
        boxes = o.pred_boxes.tensor
        assert (boxes[:, 2] <= expected_size[1]).all() and (boxes[:, 3] <= expected_size[0]).all()
    # the up-scaled image's boxes reach beyond its network-input size
    assert ours_out[1]["instances"].pred_boxes.tensor[:, 2].max() > 200


# ---------------------------------------------------------------- any Detectron2 config


def assert_same_detections(ref_out, ours_out, min_detections=1):
    """
    Per image the same detections as a set: same class, IoU >= 0.999, score within 1e-4, at the
    same output size; only near-tied scores (at the per-image cap, or two overlapping boxes of
    one class in NMS) may differ, and only a few.
    """
    assert len(ours_out) == len(ref_out)
    for r, o in zip(ref_out, ours_out):
        r, o = r["instances"], o["instances"]
        assert o.image_size == r.image_size
        assert len(r) >= min_detections, len(r)
        result = compare_detections(o, r, min_iou=0.999, score_atol=1e-4)
        assert result["match"], result
        assert result["ties"] <= max(2, len(r) // 20), result


def calibrate_frozen_batchnorm(model, inputs):
    """
    Give every FrozenBatchNorm2d of `model` the per-channel mean and variance of its input on
    `inputs`, as a pretrained ResNet's statistics would: a randomly initialised ResNet-50/101
    with identity FrozenBN grows its activations stage by stage until every score is 1.0 and
    the ranking of detections is a tie.
    """
    def set_statistics(module, args):
        module.running_mean.copy_(args[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(args[0].var(dim=(0, 2, 3)))

    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    handles = [m.register_forward_pre_hook(set_statistics) for m in norms]
    with torch.no_grad():
        model.eval()([{"image": x["image"]} for x in inputs])
    for h in handles:
        h.remove()
    return len(norms)


def assert_same_anchor_labels(ref, ours, batch):
    """Every anchor of the batch gets the built-in's label (class, background or ignored) and box."""
    with torch.no_grad():
        images = ref.preprocess_image(batch)
        features = ref.backbone(images.tensor)
        features = [features[f] for f in ref.head_in_features]
        gt = [x["instances"] for x in batch]
        ref_labels, ref_boxes = ref.label_anchors(ref.anchor_generator(features), gt)
        labels, boxes = ours.label_anchors(torch.cat(anchor_tensors(ours.anchor_generator, features)), gt)
    assert torch.equal(labels, torch.stack(ref_labels))
    assert torch.equal(boxes, torch.stack(ref_boxes))
    assert (labels == -1).any() == (-1 in ref.anchor_matcher.labels)


def compare_pair(ref, ours, make_batch, num_classes, sizes=((128, 160), (96, 128))):
    """Training losses of one batch (rel 1e-5) and detections of two images, ours vs the built-in."""
    batch = make_batch(counts=(4, 2), sizes=sizes, num_classes=num_classes, seed=3)
    for x in batch:  # inside the image, as Detectron2's mapper delivers them
        x["instances"].gt_boxes.clip(x["instances"].image_size)
    if calibrate_frozen_batchnorm(ref, batch):
        ours.load_state_dict(ref.state_dict())
    assert_same_anchor_labels(ref, ours, batch)
    with EventStorage():
        r = ref.train()(batch)
        o = ours.train()(batch)
    assert set(o) == set(r) == {"loss_cls", "loss_box_reg"}
    for k in r:
        assert r[k].item() > 0, k
        assert o[k].item() == pytest.approx(r[k].item(), rel=1e-5), k
    perturb_head(ref)
    with torch.no_grad():
        ref.head.cls_score.bias.add_(1.0)  # scores around 0.15: well above SCORE_THRESH_TEST
    ours.load_state_dict(ref.state_dict())
    inputs = [{"image": b["image"]} for b in batch]
    inputs[1]["height"], inputs[1]["width"] = 150, 200
    with torch.no_grad():
        ref_out = ref.eval()(inputs)
        assert_same_detections(ref_out, ours.eval()(inputs), min_detections=min(5, ref.max_detections_per_image))
    return ref_out


ZOO_CONFIGS = [
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
    "COCO-Detection/retinanet_R_101_FPN_3x.yaml",
]


@pytest.mark.parametrize("name", ZOO_CONFIGS)
def test_zoo_config_switches_with_meta_architecture_alone(name, make_batch):
    ref_cfg = zoo_cfg(name)
    ours_cfg = zoo_cfg(name, ["MODEL.META_ARCHITECTURE", "RetinaNetPlugin"])
    assert ref_cfg.MODEL.BACKBONE.NAME == ours_cfg.MODEL.BACKBONE.NAME == "build_retinanet_resnet_fpn_backbone"
    assert ours_cfg.MODEL.ANCHOR_GENERATOR.NAME == "DefaultAnchorGenerator"
    ref, ours = build_pair_from(ref_cfg, ours_cfg)
    assert ours.head.cls_score.out_channels == 9 * 80  # the zoo's 9 anchors, 80 classes
    compare_pair(ref, ours, make_batch, num_classes=80, sizes=((96, 128), (64, 96)))


SIZES_3 = [[x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in (32, 64, 128)]

# One change of each Detectron2 key the plugin reads, from the zoo config (with ResNet-18).
KEY_CHANGES = [
    ("MODEL.RETINANET.NUM_CLASSES", 7),
    ("MODEL.RETINANET.IN_FEATURES", ["p3", "p4", "p5"], "MODEL.ANCHOR_GENERATOR.SIZES", SIZES_3),
    ("MODEL.RETINANET.NUM_CONVS", 2),
    ("MODEL.RETINANET.IOU_THRESHOLDS", [0.3, 0.6]),
    ("MODEL.RETINANET.IOU_LABELS", [0, 0, 1]),
    ("MODEL.RETINANET.IOU_THRESHOLDS", [0.45], "MODEL.RETINANET.IOU_LABELS", [0, 1]),
    ("MODEL.RETINANET.PRIOR_PROB", 0.05),
    ("MODEL.RETINANET.SCORE_THRESH_TEST", 0.175),  # about the median score of compare_pair's heads
    ("MODEL.RETINANET.TOPK_CANDIDATES_TEST", 40),
    ("MODEL.RETINANET.NMS_THRESH_TEST", 0.3),
    ("MODEL.RETINANET.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0, 5.0)),
    ("MODEL.RETINANET.FOCAL_LOSS_GAMMA", 1.5),
    ("MODEL.RETINANET.FOCAL_LOSS_ALPHA", 0.5),
    ("MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", 0.0),
    ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"),
    ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "diou"),
    ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "ciou"),
    ("MODEL.RETINANET.NORM", "GN"),
    ("MODEL.RETINANET.NORM", "BN"),
    ("MODEL.ANCHOR_GENERATOR.NAME", "RetinaAnchorGenerator"),
    ("MODEL.ANCHOR_GENERATOR.SIZES", [[x, 1.5 * x] for x in (24, 48, 96, 192, 384)]),
    ("MODEL.ANCHOR_GENERATOR.SIZES", [[40, 80]]),
    ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.25, 1.0, 4.0, 2.0]]),
    ("MODEL.ANCHOR_GENERATOR.OFFSET", 0.5),
    ("TEST.DETECTIONS_PER_IMAGE", 7),
    ("MODEL.FPN.OUT_CHANNELS", 64),
    ("MODEL.FPN.NORM", "GN"),
    ("MODEL.FPN.FUSE_TYPE", "avg"),
    ("MODEL.RESNETS.DEPTH", 34),
    ("MODEL.RESNETS.NORM", "GN"),
    ("MODEL.RESNETS.STEM_OUT_CHANNELS", 32),
    ("MODEL.BACKBONE.FREEZE_AT", 0),
    ("MODEL.BACKBONE.NAME", "build_retina_plugin_resnet_fpn_backbone"),
]


@pytest.mark.parametrize("change", KEY_CHANGES, ids=lambda c: f"{c[0]}={c[1]}")
def test_each_detectron2_key_has_detectron2s_meaning(change, make_batch):
    ref_cfg, ours_cfg = parity_cfgs(opts=change)
    for key, value in zip(change[0::2], change[1::2]):
        node = ours_cfg
        for part in key.split("."):
            node = node[part]
        assert node == value or list(node) == list(value), key  # the change took effect
    ref, ours = build_pair_from(ref_cfg, ours_cfg)
    ref_out = compare_pair(ref, ours, make_batch, num_classes=ref_cfg.MODEL.RETINANET.NUM_CLASSES)
    if change[0] == "TEST.DETECTIONS_PER_IMAGE":
        assert [len(x["instances"]) for x in ref_out] == [7, 7]
