"""
The rotated RetinaNetPlugin (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator, five
BBOX_REG_WEIGHTS): its head, losses, inference and checkpoints; with ANGLES [[0]] on zero-angle
boxes it labels anchors and decodes deltas as the horizontal model does.
"""
import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, RotatedBoxes
from detectron2.utils.events import EventStorage

from retina_plugin import load_config
from retina_plugin.errors import UserError
from retina_plugin.modeling.anchor_generator import anchor_tensors
from retina_plugin.weights.checkpoint import RetinaCheckpointer

from levels import zero_features
from tool_runs import BASE_CONFIG, REPO, ROTATED_OPTS, SMALL_MODEL_OPTS

pytestmark = pytest.mark.usefixtures("single_thread")


def rotated_cfg(*opts):
    return load_config(str(REPO / BASE_CONFIG), SMALL_MODEL_OPTS + ROTATED_OPTS + list(opts))


def xyxy_to_xywha(boxes):
    """(N, 4) XYXY -> (N, 5) XYWHA at angle 0."""
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, torch.zeros_like(x0)), dim=1)


def xywha_to_xyxy(boxes):
    """(N, 5) XYWHA of angle 0 -> (N, 4) XYXY."""
    cx, cy, w, h, _ = boxes.unbind(1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=1)


def rotated_batch(counts=(4, 2), sizes=((160, 224), (128, 192)), seed=3):
    """Input dicts with RotatedBoxes ground truth at any angle in [-180, 180)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for n, (h, w) in zip(counts, sizes):
        centres = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
        sides = torch.rand(n, 2, generator=g) * torch.tensor([60.0, 20.0]) + torch.tensor([20.0, 8.0])
        angles = torch.rand(n, 1, generator=g) * 360 - 180
        inst = Instances((h, w), gt_boxes=RotatedBoxes(torch.cat([centres, sides, angles], 1)))
        inst.gt_classes = torch.randint(0, 3, (n,), generator=g)
        batch.append({"image": torch.rand(3, h, w, generator=g) * 255, "instances": inst})
    return batch


@pytest.mark.parametrize(
    "opts, key, says",
    [
        (["MODEL.RETINANET.BBOX_REG_WEIGHTS", "(1.0, 1.0, 1.0, 1.0)"], "MODEL.RETINANET.BBOX_REG_WEIGHTS", "needs 5 weights"),
        (["MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"], "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "use smooth_l1"),
        (["MODEL.ANCHOR_GENERATOR.ANGLES", "[[0, 400]]"], "MODEL.ANCHOR_GENERATOR.ANGLES", "[-180, 180]"),
        (["MODEL.ANCHOR_GENERATOR.ANGLES", "[[0], [0, 90], [0], [0], [0]]"], "MODEL.ANCHOR_GENERATOR.SIZES", "[9, 18, 9, 9, 9] anchors per level"),
    ],
)
def test_a_rotated_config_the_model_cannot_honour_fails_in_one_line(opts, key, says):
    with pytest.raises(UserError) as error:
        rotated_cfg(*opts)
    message = str(error.value)
    assert "\n" not in message and f"cfg.{key} = " in message and says in message, message


def test_the_head_predicts_five_deltas_per_anchor():
    cfg = rotated_cfg("MODEL.ANCHOR_GENERATOR.ANGLES", "[[-60, -30, 0, 30, 60, 90]]")
    model = build_model(cfg)
    assert model.head.bbox_pred.out_channels == 9 * 6 * 5  # 3 sizes x 3 ratios x 6 angles, 5 deltas each
    assert model.head.cls_score.out_channels == 9 * 6 * 3
    logits, deltas = model.head(zero_features([(8, 10), (4, 5)], n=2, channels=256))
    assert [tuple(d.shape) for d in deltas] == [(2, 8 * 10 * 54, 5), (2, 4 * 5 * 54, 5)]
    assert [tuple(x.shape) for x in logits] == [(2, 8 * 10 * 54, 3), (2, 4 * 5 * 54, 3)]


def test_with_angle_zero_anchors_the_rotated_model_labels_anchors_as_the_horizontal_one(small_cfg):
    horizontal, rotated = build_model(small_cfg), build_model(rotated_cfg())
    features = zero_features([(20, 28), (10, 14), (5, 7), (3, 4), (2, 2)], channels=1)  # a 160x224 input
    h_anchors = torch.cat(anchor_tensors(horizontal.anchor_generator, features))
    r_anchors = torch.cat(anchor_tensors(rotated.anchor_generator, features))
    assert torch.allclose(r_anchors, xyxy_to_xywha(h_anchors), atol=1e-4)

    g = torch.Generator().manual_seed(5)
    # Boxes of 30 px or more, some across the image's edge (clipped); no tiny ones, whose IoUs with
    # several anchors tie, and a tie of low-quality matches breaks by the last bit of each IoU.
    xy = torch.rand(12, 2, generator=g) * torch.tensor([214.0, 150.0]) - 10
    boxes = torch.cat([xy, xy + torch.rand(12, 2, generator=g) * 70 + 30], 1)
    classes = torch.arange(12) % 3
    h_gt = Instances((160, 224), gt_boxes=Boxes(boxes), gt_classes=classes)
    r_gt = Instances((160, 224), gt_boxes=RotatedBoxes(xyxy_to_xywha(boxes)), gt_classes=classes)
    h_labels, h_matched = horizontal.label_anchors(h_anchors, [h_gt])
    r_labels, r_matched = rotated.label_anchors(r_anchors, [r_gt])
    assert torch.equal(r_labels, h_labels)
    foreground = (h_labels[0] >= 0) & (h_labels[0] < 3)
    assert foreground.sum() >= 12 and (h_labels[0] == -1).any()
    assert torch.allclose(xywha_to_xyxy(r_matched[0][foreground]), h_matched[0][foreground], atol=1e-3)


def test_equal_deltas_give_the_horizontal_model_s_detections(small_cfg):
    """Equal logits, the same (dx, dy, dw, dh) and da = 0: the same boxes, scores and classes after NMS and rescaling."""
    small_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.3
    horizontal, rotated = build_model(small_cfg), build_model(rotated_cfg("MODEL.RETINANET.SCORE_THRESH_TEST", "0.3"))
    features = zero_features([(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)], channels=1)  # a 128x160 input
    h_anchors = anchor_tensors(horizontal.anchor_generator, features)
    r_anchors = anchor_tensors(rotated.anchor_generator, features)
    g = torch.Generator().manual_seed(2)
    logits = [torch.randn(1, len(a), 3, generator=g) * 2 - 1 for a in h_anchors]
    deltas = [torch.randn(1, len(a), 4, generator=g) * 0.3 for a in h_anchors]
    r_deltas = [torch.cat([d, torch.zeros_like(d[..., :1])], dim=2) for d in deltas]
    (h_out,) = horizontal.postprocess(h_anchors, logits, deltas, [(128, 160)], [(256, 320)])
    (r_out,) = rotated.postprocess(r_anchors, logits, r_deltas, [(128, 160)], [(256, 320)])
    assert isinstance(r_out.pred_boxes, RotatedBoxes) and r_out.image_size == (256, 320)
    assert len(h_out) > 20 and len(r_out) == len(h_out)
    assert torch.equal(r_out.pred_classes, h_out.pred_classes) and torch.allclose(r_out.scores, h_out.scores)
    assert torch.allclose(xywha_to_xyxy(r_out.pred_boxes.tensor), h_out.pred_boxes.tensor, atol=1e-3)


def test_a_training_step_gives_finite_losses_and_gradients():
    torch.manual_seed(0)
    model = build_model(rotated_cfg("MODEL.ANCHOR_GENERATOR.ANGLES", "[[-45, 0, 45, 90]]")).train()
    with EventStorage() as storage:
        losses = model(rotated_batch())
        assert storage.latest()["num_pos_anchors"][0] >= 3  # every box keeps at least its best anchor
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    for param in (model.head.bbox_pred.weight, model.head.bbox_subnet[0].weight, model.backbone.bottom_up.res5[0].conv1.weight):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_the_box_loss_is_the_same_for_a_box_and_the_box_turned_half_a_turn():
    """(cx, cy, w, h, a) and (cx, cy, w, h, a + 180) are one rectangle: the target's da is within 90 degrees of the anchor's."""
    torch.manual_seed(0)
    model = build_model(rotated_cfg()).train()
    batch = rotated_batch(counts=(3,), sizes=((128, 160),))
    turned = [dict(batch[0])]
    turned_boxes = batch[0]["instances"].gt_boxes.tensor.clone()
    turned_boxes[:, 4] = (turned_boxes[:, 4] + 360) % 360 - 180  # a + 180, into [-180, 180)
    turned[0]["instances"] = Instances((128, 160), gt_boxes=RotatedBoxes(turned_boxes), gt_classes=batch[0]["instances"].gt_classes)
    loss = model(batch)["loss_box_reg"]
    model.loss_normalizer = 100.0  # as before the first step
    loss_turned = model(turned)["loss_box_reg"]
    assert loss.item() > 0 and math.isclose(loss.item(), loss_turned.item(), rel_tol=1e-5)


def test_inference_gives_rotated_boxes_rescaled_to_the_output_size():
    cfg = rotated_cfg(
        "MODEL.ANCHOR_GENERATOR.ANGLES", "[[0, 45]]", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.005",
        "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "100",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = rotated_batch(counts=(0,), sizes=((128, 160),))[0]["image"]
    with torch.no_grad():
        (same,) = model([{"image": image}])
        (double,) = model([{"image": image, "height": 256, "width": 320}])
    same, double = same["instances"], double["instances"]
    assert isinstance(double.pred_boxes, RotatedBoxes) and double.pred_boxes.tensor.shape[1] == 5
    assert double.image_size == (256, 320) and len(double) == len(same) == 100
    expected = same.pred_boxes.tensor * torch.tensor([2.0, 2.0, 2.0, 2.0, 1.0])
    assert torch.allclose(double.pred_boxes.tensor, expected, atol=1e-3)
    assert torch.equal(double.scores, same.scores) and torch.equal(double.pred_classes, same.pred_classes)


def test_a_checkpoint_round_trip_gives_the_same_detections(tmp_path):
    cfg = rotated_cfg("MODEL.RETINANET.SCORE_THRESH_TEST", "0.005", "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "50")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.bbox_pred.bias.copy_(torch.linspace(-0.2, 0.2, model.head.bbox_pred.out_channels))
    RetinaCheckpointer(model, save_dir=str(tmp_path)).save("rotated")
    torch.manual_seed(1)
    loaded = build_model(cfg).eval()
    RetinaCheckpointer(loaded).load(str(tmp_path / "rotated.pth"))
    assert loaded.head.bbox_pred.weight.shape[0] == 9 * 5
    image = torch.rand(3, 96, 128) * 255
    with torch.no_grad():
        expected, got = model([{"image": image}])[0]["instances"], loaded([{"image": image}])[0]["instances"]
    assert len(got) > 0 and torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.scores, expected.scores)
