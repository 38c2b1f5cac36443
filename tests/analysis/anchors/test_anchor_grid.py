"""retina_plugin.analysis.anchors.anchor_settings: the anchor keys as Detectron2 reads them, and the model's own anchors."""
import pytest
import torch

from anchor_cases import analysis_cfg, model_anchors
from retina_plugin.analysis.anchors import AnchorGrid, AnchorSetting


@pytest.mark.parametrize("sizes, expected", [
    ("[32, 64]", ((32.0, 64.0),) * 5),  # a flat list: every level
    ("[[16, 20]]", ((16.0, 20.0),) * 5),  # one list: every level
    ("[[8], [16], [32], [64], [128]]", ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))),
])  # fmt: skip
@pytest.mark.parametrize("generator", ["RetinaAnchorGenerator", "DefaultAnchorGenerator"])
def test_anchor_setting_reads_detectron2_anchor_keys(sizes, expected, generator):
    cfg = analysis_cfg("MODEL.ANCHOR_GENERATOR.NAME", generator, "MODEL.ANCHOR_GENERATOR.SIZES", sizes,
                       "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", str([[0.5, 1.0]] * 5))
    setting = AnchorSetting.from_config(cfg)
    assert setting == AnchorSetting(expected, ((0.5, 1.0),))  # equal per-level ratios read as one tuple
    grid = AnchorGrid.from_config(cfg)
    assert type(grid.generator).__name__ == generator
    for ours, theirs in zip(setting.level_cell_anchors(), grid.level_cell_anchors):
        assert torch.equal(ours, theirs)
    assert AnchorSetting.from_config(setting.apply_to(analysis_cfg())) == setting
    assert setting.to_dict() == {"SIZES": [list(s) for s in expected], "ASPECT_RATIOS": [[0.5, 1.0]]}

    per_level = AnchorSetting.from_config(analysis_cfg("MODEL.ANCHOR_GENERATOR.SIZES", sizes,
                                                       "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
                                                       str([[1.0]] * 4 + [[2.0]])))
    assert per_level.aspect_ratios == ((1.0,),) * 4 + ((2.0,),)


def test_grid_anchors_are_the_models(model):
    grid = AnchorGrid.from_config(analysis_cfg())
    for size in [(256, 422), (256, 256)]:  # the resized sizes of analysis_mixed: padded, and not
        for ours, theirs in zip(grid.anchors(size), model_anchors(model, size)):
            assert torch.equal(ours, theirs)
