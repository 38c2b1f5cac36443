"""
DOTA's mAP (retina_plugin.evaluation.dota_map) and its DatasetEvaluator on a hand-built case.

Boxes are XYWHA (degrees counter-clockwise, Detectron2's). Sliding a box along its own width
axis by a fraction s of its width leaves an overlap of (1 - s) of its area: IoU (1 - s) / (1 + s),
so s = 0.5 gives 1/3, s = 0.2 gives 2/3 and s = 0.1 gives 9/11, whatever the angle.

The case: classes ship, car, plane, harbor; two images.
  image 0: ships g0 (50, 50, 40, 20, 30), g1 (150, 60, 40, 20, -45), and a difficult ship gd.
  image 1: ships g2 (100, 100, 40, 20, 60), g3 (200, 200, 40, 20, 0) (never found), a car.
Ship detections in score order, at IoU 0.5:
  .9 on g0 exactly                TP
  .8 g1 slid by 0.5 w (IoU 1/3)   FP
  .7 on g2 exactly                TP
  .6 on the difficult ship        neither (left out of both curves)
  .5 g1 slid by 0.2 w (IoU 2/3)   TP
  .4 g0 slid by 0.1 w (IoU 9/11)  FP: its best box g0 is taken
4 non-difficult ships; the counted points (recall, precision):
  (1/4, 1), (1/4, 1/2), (2/4, 2/3), (3/4, 3/4), (3/4, 3/5).
Area under the curve (VOC2010+): the precision envelope is 1 up to recall 1/4 and 3/4 up to
recall 3/4, then 0: AP = 1/4 * 1 + 2/4 * 3/4 = 0.625.
VOC07 11-point: max precision at recall >= t for t = 0, .1, ..., 1: 1 for t <= .2 (3 points),
3/4 for .3 <= t <= .7 (5 points), 0 beyond: AP = (3 + 5 * 3/4) / 11 = 6.75 / 11.
car: one box, no detection: AP 0 (both). plane: a detection, no box: no AP (NaN). harbor:
nothing: NaN. mAP over ship and car: 0.625 / 2 = 0.3125; 11-point 6.75 / 22.
"""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators
from detectron2.structures import Boxes, BoxMode, Instances, RotatedBoxes

from retina_plugin.evaluation import (
    DetectedBoxes, DOTAEvaluator, GroundTruthBoxes, RotatedCOCOEvaluator, dota_map, evaluate_boxes, match_detections,
)  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
SHIP, CAR, PLANE, HARBOR = range(4)
NAMES = ["ship", "car", "plane", "harbor"]
G0, G1, G2, G3 = (50, 50, 40, 20, 30), (150, 60, 40, 20, -45), (100, 100, 40, 20, 60), (200, 200, 40, 20, 0)
DIFFICULT = (60, 150, 30, 12, 10)
GT = [  # (image, class, box, difficult)
    (0, SHIP, G0, False), (0, SHIP, G1, False), (0, SHIP, DIFFICULT, True),
    (1, SHIP, G2, False), (1, SHIP, G3, False), (1, CAR, (40, 200, 20, 10, 0), False),
]  # fmt: skip


def slid(box, fraction):
    """`box` moved along its own width axis by `fraction` of its width (Detectron2's angle: that axis is (cos a, -sin a))."""
    cx, cy, w, h, a = box
    d = fraction * w
    return (cx + d * math.cos(math.radians(a)), cy - d * math.sin(math.radians(a)), w, h, a)


DETECTIONS = [  # (image, class, box, score)
    (0, SHIP, G0, 0.9), (0, SHIP, slid(G1, 0.5), 0.8), (1, SHIP, G2, 0.7), (0, SHIP, DIFFICULT, 0.6),
    (0, SHIP, slid(G1, 0.2), 0.5), (0, SHIP, slid(G0, 0.1), 0.4), (1, PLANE, (10, 10, 8, 8, 0), 0.3),
]  # fmt: skip
SHIP_AUC, SHIP_VOC07 = 0.625, 6.75 / 11


def ground_truth(rows=GT) -> GroundTruthBoxes:
    return GroundTruthBoxes(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                            np.array([r[2] for r in rows], np.float64).reshape(-1, 5), np.array([r[3] for r in rows]))


def detections(rows=DETECTIONS) -> DetectedBoxes:
    return DetectedBoxes(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                         np.array([r[2] for r in rows], np.float64).reshape(-1, 5), np.array([r[3] for r in rows]))


def test_matches_of_the_hand_built_case():
    tp, fp = match_detections(ground_truth(), detections())
    assert tp.tolist() == [True, False, True, False, True, False, False]
    assert fp.tolist() == [False, True, False, False, False, True, True]  # the plane: no plane box at all


def test_map_of_the_hand_built_case():
    result = dota_map(ground_truth(), detections(), len(NAMES))
    np.testing.assert_allclose(result.ap_auc, [SHIP_AUC, 0.0, np.nan, np.nan], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.ap_voc07, [SHIP_VOC07, 0.0, np.nan, np.nan], rtol=0, atol=1e-12)
    assert result.map_auc == pytest.approx(0.3125, abs=1e-12)
    assert result.map_voc07 == pytest.approx(6.75 / 22, abs=1e-12)
    assert result.num_gt.tolist() == [4, 1, 0, 0] and result.num_det.tolist() == [6, 0, 1, 0]
    np.testing.assert_allclose(result.recall[SHIP], [1 / 4, 1 / 4, 2 / 4, 3 / 4, 3 / 4])
    np.testing.assert_allclose(result.precision[SHIP], [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])


def test_best_box_taken_is_a_false_positive_unlike_coco():
    """
    Two ships 8 px apart (IoU 2/3). The second detection overlaps the first ship (IoU 37/43),
    already taken, more than the second (IoU 7/9): DOTA's devkit counts it a false positive
    (recall 1/2: AP 0.5), where COCOeval would give it the second ship (AP 1).
    """
    gt = ground_truth([(0, SHIP, (100, 100, 40, 20, 0), False), (0, SHIP, (108, 100, 40, 20, 0), False)])
    dets = detections([(0, SHIP, (100, 100, 40, 20, 0), 0.9), (0, SHIP, (103, 100, 40, 20, 0), 0.8)])
    tp, fp = match_detections(gt, dets)
    assert tp.tolist() == [True, False] and fp.tolist() == [False, True]
    assert dota_map(gt, dets, 1).ap_auc[0] == pytest.approx(0.5, abs=1e-12)
    assert evaluate_boxes(gt, dets, 1, 1, [0.5]).matches(0.5).det_tp.tolist() == [True, True]


def test_difficult_boxes_take_any_number_of_detections_and_count_in_no_recall():
    gt = ground_truth([(0, SHIP, G0, True), (0, SHIP, G1, False)])
    dets = detections([(0, SHIP, G0, 0.9), (0, SHIP, slid(G0, 0.1), 0.8), (0, SHIP, G1, 0.7)])
    tp, fp = match_detections(gt, dets)
    assert tp.tolist() == [False, False, True] and fp.tolist() == [False, False, False]
    result = dota_map(gt, dets, 1)
    assert result.num_gt.tolist() == [1] and result.ap_auc[0] == 1.0 and result.ap_voc07[0] == pytest.approx(1.0)
    only_difficult = dota_map(ground_truth([(0, SHIP, G0, True)]), detections([(0, SHIP, G0, 0.9)]), 1)
    assert np.isnan(only_difficult.ap_auc[0]) and np.isnan(only_difficult.map_auc)


def test_empty_inputs():
    no_dets = dota_map(ground_truth(), detections([]), len(NAMES))
    np.testing.assert_array_equal(no_dets.ap_voc07, [0.0, 0.0, np.nan, np.nan])
    assert no_dets.map_auc == 0.0
    nothing = dota_map(ground_truth([]), detections([]), 2)
    assert np.isnan(nothing.ap_auc).all() and math.isnan(nothing.map_voc07)
    only_dets = match_detections(ground_truth([]), detections())
    assert only_dets[1].all() and not only_dets[0].any()


def test_axis_aligned_detections_are_taken_at_angle_zero():
    """XYWH detections of the same boxes as XYWHA ground truth at angle 0: all true positives."""
    gt = ground_truth([(0, SHIP, (30, 20, 40, 20, 0), False), (0, CAR, (100, 100, 20, 10, 0), False)])
    dets = DetectedBoxes(np.array([0, 0]), np.array([SHIP, CAR]), np.array([[10.0, 10, 40, 20], [90, 95, 20, 10]]),
                         np.array([0.9, 0.8]))  # fmt: skip
    assert match_detections(gt, dets)[0].tolist() == [True, True]


def _register(name):
    """The hand-built case, registered afresh: an evaluator caches its COCO json (the metadata's json_file) in
    another test's tmp_path, which pytest removes once that test passes."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    def dicts():
        return [
            {"file_name": f"{i}.png", "image_id": 10 + i, "height": 300, "width": 300, "annotations": [
                {"bbox": list(box), "bbox_mode": BoxMode.XYWHA_ABS, "category_id": k, "difficult": int(hard)}
                for image, k, box, hard in GT if image == i
            ]} for i in range(2)
        ]  # fmt: skip

    DatasetCatalog.register(name, dicts)
    MetadataCatalog.get(name).set(thing_classes=NAMES)
    return name


def _outputs(image):
    rows = [r for r in DETECTIONS if r[0] == image]
    instances = Instances((300, 300))
    instances.pred_boxes = RotatedBoxes(torch.tensor([r[2] for r in rows], dtype=torch.float32).reshape(-1, 5))
    instances.scores = torch.tensor([r[3] for r in rows], dtype=torch.float32)
    instances.pred_classes = torch.tensor([r[1] for r in rows], dtype=torch.int64)
    return [{"image_id": 10 + image}], [{"instances": instances}]


def test_dota_evaluator_beside_the_rotated_coco_evaluator(tmp_path):
    """The trainer's pair for a rotated model: DOTA's numbers under "dota", COCO's under "bbox"."""
    name = _register("dota_map_hand_built_case")
    evaluators = DatasetEvaluators([RotatedCOCOEvaluator(name, output_dir=str(tmp_path)), DOTAEvaluator(name)])
    evaluators.reset()
    for image in range(2):
        evaluators.process(*_outputs(image))
    results = evaluators.evaluate()
    dota = results["dota"]
    assert dota["mAP50"] == pytest.approx(100 * 6.75 / 22, abs=1e-4)  # float32 boxes: IoUs to ~1e-6
    assert dota["mAP50_auc"] == pytest.approx(100 * 0.3125, abs=1e-4)
    assert dota["AP50-ship"] == pytest.approx(100 * SHIP_VOC07, abs=1e-4) and dota["AP50_auc-car"] == 0.0
    assert math.isnan(dota["AP50-plane"]) and math.isnan(dota["AP50_auc-harbor"])
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75", "AP-ship"}


@pytest.mark.parametrize("tile_size", [0, 512])
def test_a_rotated_config_is_evaluated_by_both(tmp_path, tile_size):
    """build_evaluator (the trainer's, analyze_results', the API's) for Detectron2's rotated switch."""
    from retina_plugin import load_config
    from retina_plugin.inference.evaluation import build_evaluator

    cfg = load_config(str(REPO / "configs" / "Base-RetinaNetPlugin.yaml"), [
        "MODEL.ANCHOR_GENERATOR.NAME", "RotatedAnchorGenerator", "MODEL.RETINANET.BBOX_REG_WEIGHTS", "(1, 1, 1, 1, 1)",
        "MODEL.RETINA_PLUGIN.TILE_SIZE", str(tile_size),
    ])  # fmt: skip
    evaluator = build_evaluator(cfg, _register("dota_map_hand_built_case"), str(tmp_path))
    assert type(evaluator) is DatasetEvaluators
    coco, dota = evaluator._evaluators
    assert type(coco) is RotatedCOCOEvaluator and type(dota) is DOTAEvaluator
    assert (coco._max_dets_per_image[2] > 100) == (tile_size > 0)


def test_dota_evaluator_on_a_dota_folder(tmp_path):
    """
    The case as DOTA ships it (images/, labelTxt/ with 8 corner coordinates, class, difficult),
    read by retina_plugin.data.dota (difficult -> "difficult": 1, "iscrowd": 1): the same mAP.
    """
    from retina_plugin.data.dota import register_dota
    from retina_plugin.ops import rotated_box_corners

    for folder in ("images", "labelTxt"):
        (tmp_path / folder).mkdir()
    for image in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"P{image}.png"), np.zeros((300, 300, 3), np.uint8))
        lines = []
        for i, k, box, hard in GT:
            if i == image:
                xy = rotated_box_corners(torch.tensor([box], dtype=torch.float64))[0].flatten().tolist()
                lines.append(" ".join(f"{v:.4f}" for v in xy) + f" {NAMES[k]} {int(hard)}")
        (tmp_path / "labelTxt" / f"P{image}.txt").write_text("\n".join(lines) + "\n")
    register_dota("dota_map_hand_built_folder", str(tmp_path), NAMES)
    evaluator = DOTAEvaluator("dota_map_hand_built_folder")
    evaluator.reset()
    for image in range(2):
        evaluator.process([{"image_id": image + 1}], _outputs(image)[1])  # load_dota numbers the images 1..N
    dota = evaluator.evaluate()["dota"]
    assert dota["mAP50"] == pytest.approx(100 * 6.75 / 22, abs=1e-4)
    assert dota["mAP50_auc"] == pytest.approx(100 * 0.3125, abs=1e-4)


def test_a_horizontal_model_on_rotated_boxes_is_scored_with_rotated_iou(tmp_path):
    """
    Axis-aligned COCOeval cannot read 5-number boxes, so a horizontal model on a rotated dataset
    gets the rotated pair too, its boxes at angle 0. Ships: .9 on G3 (angle 0) exactly, a TP;
    .8 the enclosing box of G0 (turned 30 degrees: 800 / (44.6 x 37.3) = IoU 0.48), a FP. DOTA
    (4 ships): AP 1/4 by area, 3/11 by 11 points; car 0. COCO (the difficult ship counts, 5
    ships): precision 1 up to recall 1/5, 21 of 101 points; car 0: AP50 = 100 x 21 / 202.
    """
    from retina_plugin import load_config
    from retina_plugin.inference.evaluation import build_evaluator

    cfg = load_config(str(REPO / "configs" / "Base-RetinaNetPlugin.yaml"))
    evaluator = build_evaluator(cfg, _register("dota_map_hand_built_case"), str(tmp_path))
    assert [type(e) for e in evaluator._evaluators] == [RotatedCOCOEvaluator, DOTAEvaluator]
    evaluator.reset()
    enclosing = BoxMode.convert(np.array([G0], np.float64), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)[0].tolist()
    for image, boxes in ((0, [enclosing]), (1, [[180.0, 190.0, 220.0, 210.0]])):
        instances = Instances((300, 300))
        instances.pred_boxes = Boxes(torch.tensor(boxes))
        instances.scores = torch.tensor([0.8 if image == 0 else 0.9])
        instances.pred_classes = torch.tensor([SHIP])
        evaluator.process([{"image_id": 10 + image}], [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["dota"]["mAP50_auc"] == pytest.approx(100 * 0.25 / 2, abs=1e-4)
    assert results["dota"]["mAP50"] == pytest.approx(100 * 3 / 22, abs=1e-4)
    assert results["bbox"]["AP50"] == pytest.approx(100 * 21 / 202, abs=1e-4)
