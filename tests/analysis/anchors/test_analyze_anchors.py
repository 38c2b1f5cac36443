"""tools/analyze_anchors.py (retina_plugin.cli.analyze_anchors): the files it writes, the dataset it picks, its errors."""
import importlib.util
import json
import os

import cv2
import pytest

from anchor_cases import ANCHOR_KEYS, BASE_CONFIG, REPO_ROOT, SMALL_OPTS, analysis_cfg
from retina_plugin.cli.analyze_anchors import dataset_to_analyse, get_parser
from retina_plugin.cli.arguments import user_dataset_opts
from tool_runs import run_tool


def load_tool():
    path = os.path.join(REPO_ROOT, "tools", "analyze_anchors.py")
    spec = importlib.util.spec_from_file_location("analyze_anchors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_png_and_json(datasets, tmp_path):
    json_path, image_dir = datasets["elongated"]
    out = tmp_path / "out"
    result = run_tool("tools/analyze_anchors.py", "--config-file", BASE_CONFIG, "--train-json", json_path,
                      "--train-images", image_dir, "--max-images", "20", "--output", str(out),
                      "--opts", *SMALL_OPTS, timeout=120)
    assert "Current anchors" in result.stdout and "Paste into the config (YAML):" in result.stdout
    picture = cv2.imread(str(out / "anchor_coverage.png"))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100
    data = json.loads((out / "anchor_coverage.json").read_text())
    assert data["num_images"] == 20 and data["num_boxes"] == 100
    assert data["box_area_measured_in"] == "resized image"
    for summary in (data["current"], data["suggested"]):
        assert set(summary["by_size"]) == {"small", "medium", "large"}
        assert len(summary["all"]["best_iou_histogram"]) == len(data["best_iou_histogram_bin_edges"]) - 1
        assert [level["name"] for level in summary["levels"]] == ["p3", "p4", "p5", "p6", "p7"]
    assert data["suggested"]["all"]["coverage"] > data["current"]["all"]["coverage"]
    assert data["suggested"]["config_opts"][::2] == ANCHOR_KEYS


@pytest.mark.parametrize("flags, split, analysed", [
    ([], "train", "analysis_exact"),  # --dataset
    (["--train-json", "exact"], "train", "user_train_analysis_exact"),
    (["--train-json", "exact"], "test", "user_train_analysis_exact"),  # a json given is analysed, whatever --split
    (["--test-json", "mixed"], "train", "user_test_analysis_mixed"),
    (["--train-json", "exact", "--test-json", "mixed"], "test", "user_test_analysis_mixed"),  # both: --split's
])  # fmt: skip
def test_the_dataset_analysed(datasets, flags, split, analysed):
    argv = ["--config-file", BASE_CONFIG, "--dataset", "analysis_exact", "--split", split]
    for flag, key in zip(flags[::2], flags[1::2]):
        json_path, image_dir = datasets[key]
        argv += [flag, json_path, flag.replace("-json", "-images"), image_dir]
    args = get_parser().parse_args(argv)
    assert dataset_to_analyse(args, analysis_cfg(*user_dataset_opts(args))) == analysed


def test_tool_errors_are_one_line_naming_the_missing_thing(datasets, tmp_path, capsys):
    tool = load_tool()
    json_path, image_dir = datasets["exact"]
    cases = [
        (["--dataset", "no_such_dataset"], "'no_such_dataset' is not registered"),
        (["--train-json", str(tmp_path / "missing.json"), "--train-images", str(tmp_path)],
         f"{tmp_path / 'missing.json'}: file not found"),
        (["--train-json", json_path], f"--train-json and --train-images go together (got {json_path!r}, None)"),
        (["--dataset", "analysis_exact", "--opts", "MODEL.NO_SUCH_KEY", "1"], "MODEL.NO_SUCH_KEY"),
        (["--dataset", "analysis_exact", "--opts", "MODEL.RETINA_PLUGIN.FG_IOU_THRESHOLD", "0.6"],
         "MODEL.RETINA_PLUGIN.FG_IOU_THRESHOLD was renamed to MODEL.RETINANET.IOU_THRESHOLDS"),
        (["--dataset", "analysis_exact", "--opts", "MODEL.RETINANET.IOU_LABELS", "[0, -1, 0]"],
         "MODEL.RETINANET.IOU_LABELS = [0, -1, 0]: no IoU interval is labelled 1"),
        (["--split", "val"], "argument --split: invalid choice: 'val'"),
    ]
    cases = [(["--config-file", BASE_CONFIG, *args], message) for args, message in cases]
    cases += [
        (["--config-file", str(tmp_path / "none.yaml")], f"config file not found: {tmp_path / 'none.yaml'}"),
        ([], "the following arguments are required: --config-file"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool.main(argv)
        assert exit_info.value.code == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("analyze_anchors: error: ") and message in captured.err, (argv, captured.err)
        assert captured.err.count("\n") == 1 and captured.out == "", argv  # one line, nothing else
