"""retina_plugin.analysis.anchors.coverage_report: the analysis and its text and JSON."""
import copy
import shlex

import pytest

from anchor_cases import analysis_cfg
from retina_plugin.analysis.anchors import (
    AnchorCoverageError,
    AnchorGrid,
    AnchorSetting,
    analyze_anchor_coverage,
    format_anchor_coverage_report,
    load_resized_boxes,
    measure_anchor_coverage,
)


def test_printed_settings_reproduce_the_reported_coverage(elongated_report, tmp_path):
    report = elongated_report
    after = report.suggested.summary()["all"]["coverage"]
    # The printed YAML, merged into the config, reproduces the reported coverage ...
    text = format_anchor_coverage_report(report)
    yaml_text = text.split("Paste into the config (YAML):\n\n")[1].split("\n\n")[0]
    yaml_path = tmp_path / "anchors.yaml"
    yaml_path.write_text(yaml_text + "\n")
    merged = analysis_cfg()
    merged.merge_from_file(str(yaml_path))
    assert AnchorSetting.from_config(merged) == report.suggestion
    resized = load_resized_boxes(merged, "analysis_elongated")
    again = measure_anchor_coverage(resized, AnchorGrid.from_config(merged), merged)
    assert again.summary()["all"]["coverage"] == after
    # ... and so does the printed command line.
    command_line = text.split("or append to the command line:\n\n")[1].splitlines()[0]
    from_opts = analysis_cfg(*shlex.split(command_line))
    assert AnchorSetting.from_config(from_opts) == report.suggestion


def test_default_anchor_generator_gives_the_same_report(elongated_report):
    ours = copy.deepcopy(elongated_report.to_dict())  # to_dict shares the report's anchor dicts
    default = analyze_anchor_coverage(analysis_cfg("MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator"),
                                      "analysis_elongated").to_dict()
    for data in (ours, default):
        data["search"].pop("search_seconds")
        for summary in (data["current"], data["suggested"]):
            summary["anchors"].pop("generator")
    assert default == ours


def test_iou_labels_without_foreground_fail_naming_the_key(datasets):
    cfg = analysis_cfg("MODEL.RETINANET.IOU_LABELS", "[0, -1, 0]")
    with pytest.raises(AnchorCoverageError, match=r"^cfg\.MODEL\.RETINANET\.IOU_LABELS = \[0, -1, 0\]: [^\n]*$"):
        analyze_anchor_coverage(cfg, "analysis_exact")
