"""
One command-line layer: every tool with a config takes Detectron2's KEY VALUE options and
`--opts KEY VALUE` (Detectron2's demo spelling) alike, also after a flag of several values and
before the tool's own flags;
`train_net` and `lazyconfig_train_net` are Detectron2's own parser. Bad input is one line.
"""
import importlib

import pytest

from retina_plugin.cli.arguments import ToolParser, one_line_errors
from retina_plugin.config import ConfigError

# Each tool's required flags, and the options a user adds.
TOOLS = {
    "demo": ["--config-file", "c.yaml", "--input", "a.png", "b.png", "--output", "out/"],
    "predict_raster": ["--config-file", "c.yaml", "--input", "a.tif", "rasters/", "--output", "d.gpkg"],
    "export_model": ["--config-file", "c.yaml", "--output", "export/"],
    "calibrate_int8": ["--config-file", "c.yaml"],
    "analyze_anchors": ["--config-file", "c.yaml"],
    "analyze_results": ["--config-file", "c.yaml"],
}
OPTS = ["MODEL.WEIGHTS", "w.pth", "MODEL.DEVICE", "cpu"]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_trailing_options_and_the_opts_flag_are_the_same(tool):
    parser = importlib.import_module(f"retina_plugin.cli.{tool}").get_parser()
    assert isinstance(parser, ToolParser)
    required = TOOLS[tool]
    trailing = parser.parse_args(required + OPTS)
    flagged = parser.parse_args(required + ["--opts", *OPTS])
    mixed = parser.parse_args(required + OPTS[:2] + ["--opts", *OPTS[2:]])
    assert trailing.opts == flagged.opts == mixed.opts == OPTS
    # a flag of several values stops where the first config key starts
    many = next((i for i, a in enumerate(required) if a == "--input"), None)
    if many is not None:
        early = parser.parse_args(required[: many + 3] + OPTS + required[many + 3 :])
        assert early.input == required[many + 1 : many + 3] and early.opts == OPTS
    # and the tool's own flags still count after the options
    if tool in ("demo", "predict_raster"):
        after = parser.parse_args(required + OPTS + ["--tile", "512"])
        assert after.tile == 512 and after.opts == OPTS


def test_one_line_errors_print_a_user_error_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info, one_line_errors("tool"):
        raise ConfigError("config c.yaml: cfg.MODEL.RETINANET.NUM_CLASSES = 0:\n   must be >= 1")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "tool: error: config c.yaml: cfg.MODEL.RETINANET.NUM_CLASSES = 0: must be >= 1\n"
    with pytest.raises(KeyError), one_line_errors("tool"):  # not the user's to fix: a traceback
        raise KeyError("bug")
