"""retina_plugin.analysis.anchors.anchor_search: a suggestion covering boxes the config's anchors miss, in Detectron2's keys."""
import torch
from detectron2.modeling import build_model

from anchor_cases import ANCHOR_KEYS, SHAPES_CONFIG, analysis_cfg
from retina_plugin import load_config
from retina_plugin.analysis.anchors import AnchorGrid, AnchorSetting, suggest_anchor_setting


def test_suggestion_raises_coverage_of_tiny_elongated_boxes(elongated_report):
    report = elongated_report
    before = report.current.summary()["all"]["coverage"]
    after = report.suggested.summary()["all"]["coverage"]
    assert before < 0.5 and after > 0.9, (before, after)
    assert report.suggested.num_positive.sum(1).min() > 0
    assert report.search["predicted_coverage_after"] == after
    assert report.suggestion.config_opts()[::2] == ANCHOR_KEYS
    assert all(len(sizes) == 3 for sizes in report.suggestion.sizes)  # 3 sizes x 3 ratios per location, as before

    # The suggested keys are Detectron2's: they load into another config and build its model,
    # with either generator and with Detectron2's own RetinaNet, whose anchors are the suggested ones.
    for extra in ([], ["MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator"],
                  ["MODEL.META_ARCHITECTURE", "RetinaNet", "MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator"]):
        other = load_config(SHAPES_CONFIG, report.suggestion.config_opts() + extra)
        assert AnchorSetting.from_config(other) == report.suggestion
        built = build_model(other)
        assert built.anchor_generator.num_cell_anchors == [9] * 5
        for ours, theirs in zip(report.suggestion.level_cell_anchors(), built.anchor_generator.cell_anchors):
            assert torch.equal(ours, theirs)


def test_search_is_deterministic(elongated_report):
    cfg = analysis_cfg()
    grid = AnchorGrid.from_config(cfg)
    grid_sizes = torch.tensor(grid.feature_sizes((256, 256))).expand(len(elongated_report.current.boxes), -1, -1)
    setting, _ = suggest_anchor_setting(elongated_report.current.boxes, grid_sizes, grid.strides, grid.offset,
                                        AnchorSetting.from_config(cfg), 0.5)
    assert setting == elongated_report.suggestion  # the same boxes give the same setting
