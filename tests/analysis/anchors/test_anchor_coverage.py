"""
retina_plugin.analysis.anchors.anchor_coverage: the pair-limited, chunked matching equals brute
force, Detectron2's pairwise_iou on every anchor of the real model and
retina_plugin.modeling.matching.label_anchors with the model's own Matcher.
"""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou

import retina_plugin.analysis.anchors.anchor_coverage as coverage_module
from anchor_cases import analysis_cfg, model_anchors
from retina_plugin.analysis.anchors import AnchorGrid, best_iou_on_grid, load_resized_boxes, measure_anchor_coverage
from retina_plugin.modeling.matching import label_anchors

MATCHINGS = [  # IOU_THRESHOLDS, IOU_LABELS, then the foreground and background thresholds they give
    (None, None, 0.5, 0.4),  # the config's [0.4, 0.5], [0, -1, 1]
    ("[0.3, 0.6]", "[0, -1, 1]", 0.6, 0.3),
    ("[0.5]", "[0, 1]", 0.5, 0.5),
    ("[0.3, 0.45, 0.6]", "[0, -1, 1, 1]", 0.45, 0.3),
]


@pytest.fixture(scope="module")
def model_of(model):
    """model_of(opts): the model of analysis_cfg(*opts), built once per opts."""
    models = {(): model}

    def get(opts):
        if tuple(opts) not in models:
            models[tuple(opts)] = build_model(analysis_cfg(*opts)).eval()
        return models[tuple(opts)]

    return get


@pytest.mark.parametrize("pairs_per_chunk", [None, 500])  # 500: about one box per chunk
@pytest.mark.parametrize("thresholds, labels, fg_threshold, bg_threshold", MATCHINGS)
def test_coverage_and_positives_equal_brute_force_and_label_anchors(
    datasets, model_of, pairs_per_chunk, thresholds, labels, fg_threshold, bg_threshold, monkeypatch
):
    if pairs_per_chunk is not None:
        monkeypatch.setattr(coverage_module, "PAIRS_PER_CHUNK", pairs_per_chunk)
    opts = []
    if thresholds is not None:
        opts = ["MODEL.RETINANET.IOU_THRESHOLDS", thresholds, "MODEL.RETINANET.IOU_LABELS", labels]
    cfg = analysis_cfg(*opts)
    model = model_of(opts)  # label_anchors with the matcher of a model built with these keys
    resized = load_resized_boxes(cfg, "analysis_mixed")
    grid = AnchorGrid.from_config(cfg)
    coverage = measure_anchor_coverage(resized, grid, cfg)
    assert (coverage.fg_threshold, coverage.bg_threshold) == (fg_threshold, bg_threshold)
    brute_best, first = [], 0
    for boxes, size in zip(resized.boxes, resized.image_sizes):
        level_anchors = model_anchors(model, size)
        anchors = torch.cat(level_anchors)
        level = torch.repeat_interleave(torch.arange(len(level_anchors)), torch.tensor([len(a) for a in level_anchors]))
        iou = pairwise_iou(Boxes(boxes), Boxes(anchors))  # every box against every anchor
        ours = slice(first, first + len(boxes))
        first += len(boxes)
        assert torch.equal(coverage.best_iou[ours], iou.max(1).values)
        fg = iou >= fg_threshold
        fg_per_level = torch.stack([(fg & (level == k)).sum(1) for k in range(len(level_anchors))], 1)
        assert torch.equal(coverage.num_fg[ours], fg_per_level)
        brute_best.append(iou.max(1).values)

        # Training's labelling of every anchor, with box g as class g: an anchor labelled g is a
        # positive of box g (num_classes len(boxes) is the background label).
        instances = Instances(size, gt_boxes=Boxes(boxes), gt_classes=torch.arange(len(boxes)))
        anchor_labels, _ = label_anchors(anchors, [instances], model.anchor_matcher, len(boxes))
        for g in range(len(boxes)):
            expected = torch.bincount(level[anchor_labels[0] == g], minlength=len(level_anchors))
            assert torch.equal(coverage.num_positive[ours][g], expected), g
    brute_best = torch.cat(brute_best)
    summary = coverage.summary()
    assert summary["all"]["num_covered"] == int((brute_best >= fg_threshold).sum())
    assert 0 < summary["all"]["num_covered"] < len(brute_best)  # the data has both kinds
    assert summary["boxes_with_low_quality_positives_only"] > 0

    grid_sizes = torch.cat([torch.tensor(grid.feature_sizes(s)).expand(len(b), -1, -1)
                            for b, s in zip(resized.boxes, resized.image_sizes)])
    closed_form = best_iou_on_grid(coverage.boxes, grid_sizes, grid.strides, grid.offset, grid.level_cell_anchors)
    assert torch.allclose(closed_form, brute_best.double(), atol=1e-5)
