"""FocalLossHead: the prior, output shapes and anchor order."""
import math

import pytest
import torch

from retina_plugin import (
    RETINA_HEAD_REGISTRY,
    FocalLossHead,
)

from levels import FEATURE_SIZES_256x320, level_shapes

pytestmark = pytest.mark.usefixtures("single_thread")


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
