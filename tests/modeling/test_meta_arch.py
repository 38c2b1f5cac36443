"""RetinaNetPlugin as a whole: edge cases of training and inference, bfloat16, VIS_PERIOD."""
import math

import numpy as np
import pytest
import torch
from detectron2.modeling import (
    build_model,
)
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

from retina_plugin.modeling.anchor_generator import anchor_tensors

from levels import STRIDES

pytestmark = pytest.mark.usefixtures("single_thread")


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
