"""
Anchor matching and the losses on any ground truth: bad boxes are clipped or dropped
(counted), and matching and losses stay finite for any boxes (property-based).
"""

import torch
from detectron2.structures import Boxes, Instances
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retina_plugin.modeling.anchor_generator import anchor_tensors
from retina_plugin.modeling.matching import sanitize_boxes
from retina_plugin.modeling.meta_arch import RetinaNetPlugin


def test_sanitize_boxes_counts_each_kind():
    nan = float("nan")
    boxes = torch.tensor([
        [10, 10, 20, 20],      # fine
        [nan, 0, 5, 5],        # non-finite
        [0, 0, float("inf"), 5],
        [5, 5, 5, 9],          # zero width
        [9, 9, 4, 12],         # negative width
        [200, 10, 230, 20],    # wholly right of the 100-wide image
        [-10, -5, 30, 40],     # partly outside: clipped
        [90, 40, 120, 60],     # partly outside: clipped
    ], dtype=torch.float32)
    kept, keep, counts = sanitize_boxes(boxes, (50, 100))
    assert keep.tolist() == [True, False, False, False, False, False, True, True]
    assert counts == {"non-finite": 2, "degenerate": 2, "outside image": 1, "clipped": 2}
    assert kept.tolist() == [[10, 10, 20, 20], [0, 0, 30, 40], [90, 40, 100, 50]]


def test_model_drops_bad_ground_truth_that_bypassed_the_loader(small_cfg, make_batch, single_thread):
    model = RetinaNetPlugin(small_cfg).train()
    batch = make_batch(counts=(3, 2), sizes=((96, 128), (96, 128)))
    batch[0]["instances"].gt_boxes.tensor[0] = torch.tensor([float("nan"), 1.0, 5.0, 5.0])
    batch[0]["instances"].gt_boxes.tensor[1] = torch.tensor([50.0, 50.0, 50.0, 80.0])
    batch[1]["instances"].gt_boxes.tensor[0] = torch.tensor([-40.0, -40.0, 500.0, 30.0])
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(8, 160),
    width=st.integers(8, 160),
    boxes=st.lists(
        st.tuples(*[st.one_of(st.floats(-200, 400, allow_nan=False), st.just(float("nan")), st.just(float("inf")))] * 4),
        max_size=12,
    ),
    seed=st.integers(0, 2**16),
)
def test_matching_and_loss_stay_finite_for_any_boxes(small_cfg, single_thread, height, width, boxes, seed):
    torch.manual_seed(seed)
    model = _property_model(small_cfg)
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.randint(0, 3, (len(boxes),))
    batch = [{"image": torch.rand(3, height, width) * 255, "instances": inst}]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), (losses, boxes)

    anchors = torch.cat(anchor_tensors(model.anchor_generator,
        [torch.zeros(1, 1, -(-height // s), -(-width // s)) for s in (8, 16, 32, 64, 128)]))
    labels, matched = model.label_anchors(anchors, [inst])
    assert ((labels >= -1) & (labels <= 3)).all()
    foreground = (labels >= 0) & (labels < 3)
    fg_boxes = matched[foreground]
    assert torch.isfinite(fg_boxes).all()
    assert (fg_boxes[:, 0] >= 0).all() and (fg_boxes[:, 2] <= width).all()
    assert (fg_boxes[:, 1] >= 0).all() and (fg_boxes[:, 3] <= height).all()
    assert (fg_boxes[:, 2] > fg_boxes[:, 0]).all() and (fg_boxes[:, 3] > fg_boxes[:, 1]).all()


_PROPERTY_MODEL = {}


def _property_model(cfg):
    if "model" not in _PROPERTY_MODEL:
        cfg.MODEL.RETINANET.NUM_CONVS = 1
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        _PROPERTY_MODEL["model"] = RetinaNetPlugin(cfg).train()
    return _PROPERTY_MODEL["model"]
