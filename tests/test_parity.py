"""
Parity with Detectron2's built-in RetinaNet, the reference: same state_dict (so model-zoo
checkpoints load), same training losses and gradients, same detections.
"""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import EventStorage

from retina_plugin import RetinaNetPlugin, add_retina_plugin_config

pytestmark = pytest.mark.usefixtures("single_thread")

ANCHOR_SIZES = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]

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


def parity_cfgs(depth=18, norm="", box_loss="smooth_l1", num_classes=3):
    """One config for both models; every RetinaNet hyperparameter set equal in both nodes."""
    cfg = get_cfg()
    add_retina_plugin_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth in (18, 34) else 256
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = ANCHOR_SIZES
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

    ours, ref = cfg.MODEL.RETINA_PLUGIN, cfg.MODEL.RETINANET
    ours.NUM_CLASSES = ref.NUM_CLASSES = num_classes
    ours.NORM = ref.NORM = norm
    ours.BBOX_REG_LOSS_TYPE = ref.BBOX_REG_LOSS_TYPE = box_loss
    ours.SMOOTH_L1_BETA = ref.SMOOTH_L1_LOSS_BETA = 0.11
    ours.IN_FEATURES = ref.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    ours.P6_SOURCE = "res5"
    ours.ANCHOR_OFFSET = 0.0
    ours.NUM_CONVS = ref.NUM_CONVS = 4
    ours.PRIOR_PROB = ref.PRIOR_PROB = 0.01
    ours.FOCAL_LOSS_ALPHA = ref.FOCAL_LOSS_ALPHA = 0.25
    ours.FOCAL_LOSS_GAMMA = ref.FOCAL_LOSS_GAMMA = 2.0
    ours.BG_IOU_THRESHOLD, ours.FG_IOU_THRESHOLD = ref.IOU_THRESHOLDS = [0.4, 0.5]
    ref.IOU_LABELS = [0, -1, 1]
    ours.ALLOW_LOW_QUALITY_MATCHES = True
    ours.BBOX_REG_WEIGHTS = ref.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    ours.SCORE_THRESH_TEST = ref.SCORE_THRESH_TEST = 0.05
    ours.TOPK_CANDIDATES_TEST = ref.TOPK_CANDIDATES_TEST = 1000
    ours.NMS_THRESH_TEST = ref.NMS_THRESH_TEST = 0.5
    ours.DETECTIONS_PER_IMAGE = cfg.TEST.DETECTIONS_PER_IMAGE = 100
    # Detectron2's RetinaNet hard-codes its EMA loss normalizer: momentum 0.9, start 100.
    ours.LOSS_NORMALIZER_MOMENTUM = 0.9
    ours.LOSS_NORMALIZER_INIT = 100.0

    ref_cfg = cfg.clone()
    ref_cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    ref_cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    ref_cfg.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    ours_cfg = cfg.clone()
    ours_cfg.MODEL.META_ARCHITECTURE = "RetinaNetPlugin"
    ours_cfg.MODEL.BACKBONE.NAME = "build_retina_plugin_resnet_fpn_backbone"
    ours_cfg.MODEL.ANCHOR_GENERATOR.NAME = "RetinaAnchorGenerator"
    return ref_cfg, ours_cfg


def build_pair(**kwargs):
    """The reference and our model, ours holding the reference's weights."""
    ref_cfg, ours_cfg = parity_cfgs(**kwargs)
    torch.manual_seed(0)
    ref = build_model(ref_cfg)
    torch.manual_seed(1)  # different init: the weights must come from the state_dict
    ours = build_model(ours_cfg)
    assert type(ref) is RetinaNet and type(ours) is RetinaNetPlugin
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
    ref_cfg, ours_cfg = parity_cfgs(depth=depth, norm=norm)
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


@pytest.mark.parametrize("norm, box_loss", [("", "smooth_l1"), ("GN", "smooth_l1"), ("", "giou")])
def test_training_losses_and_gradients_match(make_batch, norm, box_loss):
    ref, ours = build_pair(norm=norm, box_loss=box_loss)
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


@pytest.mark.parametrize("norm", ["", "GN"])
def test_inference_matches(make_batch, norm):
    ref, ours = build_pair(norm=norm)
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
