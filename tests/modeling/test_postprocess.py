"""DecodeAndNMS against the paper's inference written plainly."""

import pytest
import torch
from detectron2.layers import batched_nms
from detectron2.modeling import (
    build_anchor_generator,
)
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from retina_plugin.modeling.anchor_generator import anchor_tensors
from retina_plugin import (
    DecodeAndNMS,
)

from levels import level_shapes, zero_features

pytestmark = pytest.mark.usefixtures("single_thread")


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
