"""RetinaAnchorGenerator: counts, sizes, ratios, order, equality with DefaultAnchorGenerator, the cache."""

import pytest
import torch
from detectron2.modeling import (
    build_anchor_generator,
)
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes

from retina_plugin.modeling.anchor_generator import anchor_tensors
from retina_plugin import (
    RetinaAnchorGenerator,
)

from levels import FEATURE_SIZES_256x320, STRIDES, level_shapes, zero_features

pytestmark = pytest.mark.usefixtures("single_thread")


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
