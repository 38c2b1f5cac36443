"""retina_plugin.analysis.anchors.coverage_statistics: coverage and positives per box, by size category."""
from anchor_cases import analysis_cfg
from retina_plugin.analysis.anchors import AnchorGrid, load_resized_boxes, measure_anchor_coverage


def test_box_equal_to_an_anchor_is_covered_and_tiny_boxes_are_not(datasets):
    cfg = analysis_cfg()
    resized = load_resized_boxes(cfg, "analysis_exact")
    coverage = measure_anchor_coverage(resized, AnchorGrid.from_config(cfg), cfg)
    assert coverage.best_iou[0] == 1.0
    assert coverage.covered.tolist() == [True, False, False, False]
    assert coverage.best_iou[1:].max() < 16 / 32**2 + 1e-6  # a 4x4 box inside a 32x32 anchor at best
    assert coverage.best_level.tolist()[0] == 0  # P3
    summary = coverage.summary()
    assert summary["all"]["num_covered"] == 1 and summary["all"]["coverage"] == 0.25
    assert summary["by_size"]["small"]["num_boxes"] == 3 and summary["by_size"]["small"]["coverage"] == 0.0
    assert summary["by_size"]["medium"]["coverage"] == 1.0  # 32x32 = 32^2 is medium
    # The uncovered boxes train only on their low-quality matches.
    assert (coverage.num_fg[1:].sum(1) == 0).all() and (coverage.num_positive[1:].sum(1) > 0).all()
    assert summary["boxes_with_low_quality_positives_only"] == 3

    no_low_quality = analysis_cfg("MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES", "False")
    coverage = measure_anchor_coverage(resized, AnchorGrid.from_config(no_low_quality), no_low_quality)
    assert (coverage.num_positive[1:] == 0).all() and coverage.num_positive[0].sum() > 0
