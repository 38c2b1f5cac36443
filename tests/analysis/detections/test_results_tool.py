"""tools/analyze_results.py as a user runs it, on the hand-built case of test_results_case.py."""
import csv
import json

import cv2
import pytest
import torch
import yaml
from detectron2.modeling import build_model

from retina_plugin import load_config
from retina_plugin.analysis.detections import ERROR_TYPES, load_class_thresholds
from retina_plugin.cli.analyze_results import main
from test_results_case import CONFUSION, ERROR_COUNTS, NAMES, NUM_GT, THRESHOLDS, write_case
from tool_runs import BASE_CONFIG, QUICK_OPTS, REPO, SMALL_MODEL_OPTS, run_tool

TOOL = "tools/analyze_results.py"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_case(str(tmp_path_factory.mktemp("results_case")))


def _dataset(case):
    return ["--test-json", case[0], "--test-images", case[1]]


def test_tool_writes_every_file(case, tmp_path):
    out = tmp_path / "analysis"
    proc = run_tool(TOOL, *_dataset(case), "--predictions", case[2], "--output", str(out))
    assert "cat " in proc.stdout and "missed" in proc.stdout and "Wrote" in proc.stdout
    with open(out / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == NAMES and [int(r["num_gt"]) for r in rows] == NUM_GT
    assert [float(r["threshold"]) for r in rows] == THRESHOLDS
    assert load_class_thresholds(str(out / "thresholds.yaml"), NAMES) == THRESHOLDS
    assert yaml.safe_load((out / "thresholds.yaml").read_text()) == dict(zip(NAMES, THRESHOLDS))
    with open(out / "confusion_matrix.csv") as f:
        table = list(csv.reader(f))
    assert table[0][1:] == NAMES + ["missed"] and [r[0] for r in table[1:]] == NAMES + ["background"]
    assert [[int(v) for v in r[1:]] for r in table[1:]] == CONFUSION
    errors = json.loads((out / "errors.json").read_text())
    assert list(errors["errors"]) == list(ERROR_TYPES)
    assert {n: e["count"] for n, e in errors["errors"].items()} == ERROR_COUNTS
    worst = sorted((out / "worst").glob("*.png"))
    assert [p.name for p in worst] == ["00_1.png", "01_2.png", "02_3.png"]  # image 4's one detection is below .85
    for png in ["pr_curves.png", "confusion_matrix.png", "errors.png"] + [f"worst/{p.name}" for p in worst]:
        image = cv2.imread(str(out / png))
        assert image is not None and image.size > 0, png


def test_bad_predictions_file_is_one_error_line(case, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"image_id": 1')
    proc = run_tool(TOOL, *_dataset(case), "--predictions", str(bad), "--output", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("analyze_results")]
    reason = "Expecting ',' delimiter: line 1 column 15 (char 14)"
    assert errors == [f"analyze_results: error: {bad}: not a JSON file ({reason})"]


@pytest.mark.parametrize(
    "content, words",
    [
        ('[{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]', "image_id 99 is not an image"),
        ('[{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 0.5}]', "category_id 7 is not a category"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}]', "bbox must be 4 numbers"),
        ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]', "needs image_id, category_id, bbox and score"),
        ('{"annotations": []}', "expected a list of COCO detections, got a dict"),
    ],
)
def test_bad_predictions_in_process(case, tmp_path, capsys, content, words):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(SystemExit) as e:
        main([*_dataset(case), "--predictions", str(bad), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    where = f"{bad}: detection 0: " if content.startswith("[") else f"{bad}: "
    assert err[0].startswith(f"analyze_results: error: {where}")
    assert words in err[0]


def test_no_weights_is_one_error_line(case, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*_dataset(case), "--output", str(tmp_path / "o"), "--opts", "MODEL.WEIGHTS", ""])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "analyze_results: error: no --predictions and MODEL.WEIGHTS is empty: pass one (--opts MODEL.WEIGHTS FILE)"
    )


def test_runs_the_model_without_predictions(case, tmp_path, capsys, single_thread):
    """A random ResNet-18 RetinaNetPlugin, every score kept: the tool runs it, then analyses its results."""
    opts = SMALL_MODEL_OPTS + QUICK_OPTS + ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]
    torch.manual_seed(0)
    weights = tmp_path / "random.pth"
    torch.save({"model": build_model(load_config(str(REPO / BASE_CONFIG), opts)).state_dict()}, weights)
    out = tmp_path / "run"
    main(["--config-file", str(REPO / BASE_CONFIG), *_dataset(case), "--output", str(out),
          "--opts", *opts, "MODEL.WEIGHTS", str(weights)])  # fmt: skip
    results = json.loads((out / "coco_instances_results.json").read_text())
    assert 0 < len(results) <= 4 * 100  # at most TEST.DETECTIONS_PER_IMAGE on each of the 4 images
    printed = capsys.readouterr().out
    assert f"coco_instances_results.json on user_test_annotations (4 images, {len(results)} detections)" in printed
    assert (out / "errors.json").exists() and (out / "worst").is_dir()
