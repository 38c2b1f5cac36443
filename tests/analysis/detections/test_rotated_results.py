"""
The error analysis (retina_plugin.analysis.detections, tools/analyze_results.py) on rotated
boxes: COCO results whose "bbox" has 5 numbers [cx, cy, w, h, angle] (Detectron2's XYWHA, as
its RotatedCOCOEvaluator writes them), matched with rotated IoU.

test_results_case's hand-built case turned as a whole by 30 degrees about the image centre
keeps every IoU (also with each detection named the other way, (cx, cy, h, w, a + 90)), so every
figure of the axis-aligned case must come out again.
"""
import csv
import json
import math

import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode

from retina_plugin.analysis.detections import analyse_results, detections_from_list, ground_truth_from_coco
from retina_plugin.analysis.detections.worst_images import write_worst_images
from retina_plugin.errors import InputFileError
from tool_runs import run_tool
from test_results_case import (
    AP50, CONFUSION, ERROR_COUNTS, FIXED_AP50_SUMS, NUM_GT, THRESHOLDS, coco_gt, coco_results, write_case,
)  # fmt: skip

ANGLE, CENTRE = 30.0, 128.0


def turned(box, angle=ANGLE):
    """The XYWHA box of XYWH `box` after the whole image turns by `angle` degrees (counter-clockwise) about its centre."""
    cx, cy, w, h, _ = BoxMode.convert(list(box), BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
    t = math.radians(angle)
    dx, dy = cx - CENTRE, cy - CENTRE
    return [CENTRE + dx * math.cos(t) + dy * math.sin(t), CENTRE - dx * math.sin(t) + dy * math.cos(t), w, h, angle]


def turned_case(image_dir=""):
    gt = coco_gt(image_dir)
    for a in gt["annotations"]:
        a["bbox"] = turned(a["bbox"])
    return gt, [dict(r, bbox=turned(r["bbox"])) for r in coco_results()]


def test_turned_case_gives_every_figure_of_the_axis_aligned_one(tmp_path):
    write_case(str(tmp_path))
    gt_dict, results = turned_case(str(tmp_path / "images"))
    gt = ground_truth_from_coco(gt_dict)
    a = analyse_results(gt, detections_from_list(results, gt), 0.5)
    assert a.gt.boxes.shape == (8, 5) and a.dets.boxes.shape == (11, 5)
    np.testing.assert_allclose(a.ap50, 100 * np.array(AP50), rtol=0, atol=1e-9)
    assert a.num_gt.tolist() == NUM_GT and a.threshold.tolist() == THRESHOLDS
    assert a.confusion.tolist() == CONFUSION
    errors = a.error_summary["errors"]
    assert {name: e["count"] for name, e in errors.items()} == ERROR_COUNTS
    for fix, total in FIXED_AP50_SUMS.items():
        fixed = a.error_summary["ap"] if fix is None else errors[fix]["fixed_ap"]
        assert fixed == pytest.approx(100 * total / 303, abs=1e-9), fix
    axis_gt = ground_truth_from_coco(coco_gt())
    axis_aligned = analyse_results(axis_gt, detections_from_list(coco_results(), axis_gt), 0.5)
    np.testing.assert_allclose(a.ap, axis_aligned.ap, rtol=0, atol=1e-9)  # .50:.95 too
    worst = write_worst_images(a, str(tmp_path / "worst"), 10)
    assert [p.rsplit("/", 1)[1] for p in worst] == ["00_1.png", "01_2.png", "02_3.png"]
    assert all(cv2.imread(p) is not None for p in worst)


def test_axis_aligned_detections_against_rotated_ground_truth_use_rotated_iou():
    """
    A diagonal ship (128, 128, 80, 20, 45): its enclosing axis-aligned box (70.7 px square,
    area 5000) has rotated IoU 1600 / 5000 = 0.32 with it, a localisation error at IoU 0.5;
    the rotated detection on it is the true positive. Ranked .9 FP, .8 TP: AP50 = 50.
    """
    ship = [128.0, 128.0, 80.0, 20.0, 45.0]
    half = 50 / math.sqrt(2)
    gt_dict = {"images": [{"id": 1, "file_name": "1.png"}], "categories": [{"id": 1, "name": "ship"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": ship, "iscrowd": 0}]}  # fmt: skip
    results = [{"image_id": 1, "category_id": 1, "bbox": [128 - half, 128 - half, 2 * half, 2 * half], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": ship, "score": 0.8}]  # fmt: skip
    gt = ground_truth_from_coco(gt_dict)
    a = analyse_results(gt, detections_from_list(results, gt), 0.5)
    assert a.matches.det_tp.tolist() == [False, True]
    assert a.ap50[0] == pytest.approx(50.0, abs=1e-9)
    assert a.error_summary["errors"]["loc"]["count"] == 1


def test_rotated_results_file_with_a_bad_box_is_refused_naming_it(tmp_path):
    gt = ground_truth_from_coco(turned_case()[0])
    bad = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4, 5, 6], "score": 0.5}]
    with pytest.raises(InputFileError) as e:
        detections_from_list(bad, gt, source="rotated.json")
    assert str(e.value) == (
        "rotated.json: detection 0: bbox must be 4 numbers [x, y, w, h] or 5 [cx, cy, w, h, angle] and score a number"
    )


def test_tool_on_a_rotated_dataset_and_rotated_results(tmp_path):
    """
    tools/analyze_results.py on the turned case as files: a COCO json of 5-number boxes (loaded
    as XYWHA_ABS) and a results file whose boxes are each stood on its side, (cx, cy, h, w, a + 90),
    the same rectangle named the other way. Every figure of the axis-aligned case comes out.
    """
    _, images, _ = write_case(str(tmp_path))
    gt_dict, results = turned_case()
    gt_path, predictions = tmp_path / "rotated.json", tmp_path / "rotated_predictions.json"
    gt_path.write_text(json.dumps(gt_dict))
    predictions.write_text(json.dumps([dict(r, bbox=[*r["bbox"][:2], r["bbox"][3], r["bbox"][2], ANGLE + 90])
                                       for r in results]))  # fmt: skip
    out = tmp_path / "analysis"
    run_tool("tools/analyze_results.py", "--test-json", str(gt_path), "--test-images", images, "--predictions",
             str(predictions), "--output", str(out))  # fmt: skip
    with open(out / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["AP50"]) for r in rows] == [round(100 * ap, 4) for ap in AP50]
    assert [float(r["threshold"]) for r in rows] == THRESHOLDS and [int(r["num_gt"]) for r in rows] == NUM_GT
    with open(out / "confusion_matrix.csv") as f:
        assert [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]] == CONFUSION
    errors = json.loads((out / "errors.json").read_text())["errors"]
    assert {name: e["count"] for name, e in errors.items()} == ERROR_COUNTS
    assert sorted(p.name for p in (out / "worst").glob("*.png")) == ["00_1.png", "01_2.png", "02_3.png"]
