"""
tools/evaluate_raster.py on generated scenes: predictions built from the scene's objects with
known matches (exact, shifted to IoU 0.45, dropped, duplicated, wrongly labelled), so that
precision and recall at IoU 0.4 and 0.5 are known, and COCO AP is pycocotools' on the same boxes.
"""
import contextlib
import io
import json
import runpy

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina_plugin.geo.evaluate import RasterTruth, coco_ap, match_raster
from retina_plugin.geo.evaluate_plot import COLOURS, display_image, plot_evaluation
from retina_plugin.geo.scenes import write_shapes_scene
from retina_plugin.geo.vectors import boxes_to_polygons, detections_frame, write_detections
from tool_runs import REPO, run_tool

TOOL = "tools/evaluate_raster.py"
main = runpy.run_path(str(REPO / TOOL))["main"]

SHIFTED_IOU = 0.45  # between the two thresholds: a match at 0.4, none at 0.5
N_SHIFT, N_DROP, N_DUP, N_WRONG = 4, 3, 2, 2


def iou_matrix(a, b):
    """(A, B) IoU of XYXY boxes."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def shifted(box, size):
    """`box` moved along x so that its IoU with itself is SHIFTED_IOU, staying inside the raster."""
    w = box[2] - box[0]
    dx = w * (1 - SHIFTED_IOU) / (1 + SHIFTED_IOU)
    dx = dx if box[2] + dx <= size else -dx
    return box + np.array([dx, 0, dx, 0])


def predictions_for(scene):
    """(boxes, scores, classes, expected counts) built from the scene's objects."""
    gt, size = scene.boxes, scene.size
    overlap = iou_matrix(gt, gt) - np.eye(len(gt))
    lonely = np.flatnonzero(overlap.max(axis=1) < 0.1)  # objects no other object overlaps
    shift = [i for i in lonely if iou_matrix(shifted(gt[i], size)[None], np.delete(gt, i, 0)).max() < 0.1][:N_SHIFT]
    rest = [i for i in lonely if i not in shift]
    drop, wrong = rest[:N_DROP], rest[N_DROP : N_DROP + N_WRONG]
    exact = [i for i in range(len(gt)) if i not in shift + drop + wrong]
    dup = [i for i in exact if i in lonely][:N_DUP]
    assert len(shift) == N_SHIFT and len(dup) == N_DUP and len(exact) > 10
    boxes = [gt[i] for i in exact] + [shifted(gt[i], size) for i in shift] + [gt[i] for i in dup] + [gt[i] for i in wrong]
    classes = [scene.classes[i] for i in exact + shift + dup] + [(scene.classes[i] + 1) % 3 for i in wrong]
    scores = list(np.linspace(0.99, 0.7, len(exact))) + [0.6] * N_SHIFT + [0.3] * N_DUP + [0.5] * N_WRONG
    e = len(exact)
    counts = {
        "0.4": {"tp": e + N_SHIFT, "fp": N_DUP + N_WRONG, "fn": N_DROP + N_WRONG},
        "0.5": {"tp": e, "fp": N_DUP + N_WRONG + N_SHIFT, "fn": N_DROP + N_WRONG + N_SHIFT},
        "agnostic 0.4": {"tp": e + N_SHIFT + N_WRONG, "fp": N_DUP, "fn": N_DROP},
    }
    return np.array(boxes), np.array(scores), np.array(classes), counts


def pycocotools_ap(gt_boxes, gt_classes, boxes, scores, classes, size):
    """bbox AP (AP, AP50, AP75) by pycocotools on one image (its default maxDets), the dicts built here."""
    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    anns = [{"id": i + 1, "image_id": 1, "category_id": int(c) + 1, "bbox": xywh(b), "area": xywh(b)[2] * xywh(b)[3],
             "iscrowd": 0} for i, (b, c) in enumerate(zip(gt_boxes, gt_classes))]  # fmt: skip
    dets = [{"image_id": 1, "category_id": int(c) + 1, "bbox": xywh(b), "score": float(s)}
            for b, s, c in zip(boxes, scores, classes)]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": 1, "width": size, "height": size}], "annotations": anns,
                        "categories": [{"id": k + 1, "name": str(k)} for k in range(3)]}  # fmt: skip
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:3]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_raster")
    scene = write_shapes_scene(str(root / "scene.tif"), 384, vectors=str(root / "gt.gpkg"), seed=3)
    boxes, scores, classes, counts = predictions_for(scene)
    frame = detections_frame(boxes, scores, classes, scene.class_names, scene.transform, scene.crs, str(root / "scene.tif"))
    write_detections([frame], str(root / "det.gpkg"))
    gt = gpd.read_file(root / "gt.gpkg")
    gt.to_crs("EPSG:4326").to_file(root / "gt_4326.gpkg")
    gt.drop(columns="label").to_file(root / "gt_nolabel.gpkg")
    return dict(root=root, scene=scene, boxes=boxes, scores=scores, classes=classes, counts=counts)


def evaluate(case, *args, gt="gt.gpkg", out="out"):
    root = case["root"]
    main(["--predictions", str(root / "det.gpkg"), "--ground-truth", str(root / gt), "--output-dir", str(root / out), *args])
    return json.loads((root / out / "evaluation.json").read_text())


def counts_of(metrics, iou):
    c = metrics["rasters"][0]["iou"][iou]
    return {k: c[k] for k in ("tp", "fp", "fn")}


def test_known_counts_and_coco_ap_by_the_tool(case):
    root, scene = case["root"], case["scene"]
    proc = run_tool(TOOL, "--predictions", str(root / "det.gpkg"), "--ground-truth", str(root / "gt.gpkg"),
                    "--output-dir", str(root / "tool"))  # fmt: skip
    metrics = json.loads((root / "tool" / "evaluation.json").read_text())
    raster = metrics["rasters"][0]
    assert raster["raster"] == str(root / "scene.tif") and metrics["matching"] == "within label"
    for iou in ("0.4", "0.5"):
        expected = case["counts"][iou]
        assert counts_of(metrics, iou) == expected
        c = raster["iou"][iou]
        assert c["precision"] == pytest.approx(expected["tp"] / (expected["tp"] + expected["fp"]))
        assert c["recall"] == pytest.approx(expected["tp"] / (expected["tp"] + expected["fn"]))
    ap = pycocotools_ap(scene.boxes, scene.classes, case["boxes"], case["scores"], case["classes"], scene.size)
    assert [raster["coco"][k] for k in ("AP", "AP50", "AP75")] == pytest.approx(list(ap), abs=1e-9)
    assert set(raster["coco"]["per_class"]) == set(scene.class_names)
    assert "scene.tif   0.4" in proc.stdout and "COCO AP per class:" in proc.stdout
    image = cv2.imread(str(root / "tool" / "scene_evaluation.png"))[:, :, ::-1]
    assert image.shape[1] == scene.size and scene.size < image.shape[0] < 1.2 * scene.size  # the legend strip below
    for colour in COLOURS.values():
        assert (image[: scene.size] == colour).all(axis=2).sum() > 20, colour


def test_perfect_predictions_give_ap_1(case, tmp_path):
    scene = case["scene"]
    frame = detections_frame(scene.boxes, np.linspace(1, 0.5, len(scene.boxes)), scene.classes, scene.class_names,
                             scene.transform, scene.crs, scene.path)  # fmt: skip
    write_detections([frame], str(tmp_path / "perfect.gpkg"))
    main(["--predictions", str(tmp_path / "perfect.gpkg"), "--ground-truth", str(case["root"] / "gt.gpkg")])
    raster = json.loads((tmp_path / "evaluation.json").read_text())["rasters"][0]
    assert raster["coco"]["AP"] == pytest.approx(1.0) and raster["iou"]["0.5"]["precision"] == 1.0
    assert raster["iou"]["0.5"]["recall"] == 1.0


def test_ground_truth_in_another_crs_gives_the_same_figures(case):
    utm, wgs84 = evaluate(case, out="utm"), evaluate(case, gt="gt_4326.gpkg", out="wgs84")
    for iou in ("0.4", "0.5"):
        assert counts_of(wgs84, iou) == counts_of(utm, iou) == case["counts"][iou]
    for key in ("AP", "AP50", "AP75"):
        assert wgs84["rasters"][0]["coco"][key] == pytest.approx(utm["rasters"][0]["coco"][key], abs=1e-6)


def test_ground_truth_without_labels_is_class_agnostic(case):
    metrics = evaluate(case, "--iou", "0.4", gt="gt_nolabel.gpkg", out="agnostic")
    assert metrics["matching"] == "class-agnostic" and metrics["class_names"] == ["object"]
    assert counts_of(metrics, "0.4") == case["counts"]["agnostic 0.4"]


def test_score_threshold_drops_the_low_scores(case):
    metrics = evaluate(case, "--score-threshold", "0.55", out="thresholded")
    c = counts_of(metrics, "0.4")
    assert c == {"tp": case["counts"]["0.4"]["tp"], "fp": 0, "fn": N_DROP + N_WRONG}  # duplicates and wrong labels go


def test_several_rasters_per_raster_and_overall(case, tmp_path):
    """Two scenes side by side, one detection layer naming both: each scored on its own ground truth."""
    frames, gts, expected = [], [], []
    for k in range(2):
        scene = write_shapes_scene(str(tmp_path / f"s{k}.tif"), 256, seed=10 + k)
        transform = scene.transform @ Affine.translation(300 * k, 0)  # the second 300 pixels east
        with rasterio.open(scene.path, "r+") as dst:
            dst.transform = transform
        keep = np.arange(len(scene.boxes)) % 4 != 0  # every fourth object missed
        frames.append(detections_frame(scene.boxes[keep], np.full(keep.sum(), 0.9), scene.classes[keep],
                                       scene.class_names, transform, scene.crs, scene.path))  # fmt: skip
        labels = [scene.class_names[c] for c in scene.classes]
        gts.append(gpd.GeoDataFrame({"label": labels}, geometry=boxes_to_polygons(scene.boxes, transform), crs=scene.crs))
        expected.append({"tp": int(keep.sum()), "fp": 0, "fn": int((~keep).sum())})
    write_detections(frames, str(tmp_path / "det.gpkg"))
    gpd.pd.concat(gts).to_file(tmp_path / "gt.gpkg")
    main(["--predictions", str(tmp_path / "det.gpkg"), "--ground-truth", str(tmp_path / "gt.gpkg"), "--iou", "0.5"])
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["raster"] for r in metrics["rasters"]] == [str(tmp_path / "s0.tif"), str(tmp_path / "s1.tif")]
    got = [{k: r["iou"]["0.5"][k] for k in ("tp", "fp", "fn")} for r in metrics["rasters"]]
    assert got == expected
    overall = metrics["overall"]["iou"]["0.5"]
    assert [overall[k] for k in ("tp", "fp", "fn")] == [sum(e[k] for e in expected) for k in ("tp", "fp", "fn")]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["s0_evaluation.png", "s1_evaluation.png"]


def test_png_is_a_decimated_read(case, tmp_path):
    scene = case["scene"]
    truth = RasterTruth(scene.path, 384, 384, scene.crs, scene.boxes, np.array(["a"] * len(scene.boxes), object),
                        scene.boxes[:5], np.ones(5), np.array(["a"] * 5, object))  # fmt: skip
    (det_tp, gt_matched), = match_raster(truth, [0.5])
    path = plot_evaluation(truth, det_tp, gt_matched, 0.5, str(tmp_path / "small.png"), max_side=96)
    image = cv2.imread(path)[:, :, ::-1]
    assert display_image(scene.path, 96)[0].shape == (96, 96, 3)
    assert image.shape[1] == 96 and image.shape[0] > 96  # the raster, then the legend strip below it
    raster = image[:96]
    assert (raster == COLOURS["TP"]).all(axis=2).any() and (raster == COLOURS["missed"]).all(axis=2).any()


def _shifted_gt(case, path, crs=None, dx=0.0):
    gt = gpd.read_file(case["root"] / "gt.gpkg")
    gt = gt.set_geometry(gt.geometry.translate(dx)) if dx else gt
    (gt.set_crs(crs, allow_override=True) if crs else gt).to_file(path)
    return str(path)


@pytest.mark.parametrize("bad", ["missing_predictions", "missing_ground_truth", "no_score", "iou_0", "iou_1.5", "far_away", "other_crs"])
def test_bad_input_is_one_error_line(case, tmp_path, capsys, bad):
    root = case["root"]
    pred, gt, extra = str(root / "det.gpkg"), str(root / "gt.gpkg"), []
    if bad == "missing_predictions":
        pred = named = str(tmp_path / "nothing.gpkg")
    elif bad == "missing_ground_truth":
        gt = named = str(tmp_path / "crowns.gpkg")
    elif bad == "no_score":
        gpd.read_file(pred).drop(columns="score").to_file(tmp_path / "noscore.gpkg")
        pred, named = str(tmp_path / "noscore.gpkg"), "no 'score' column"
    elif bad.startswith("iou"):
        extra, named = ["--iou", "0.5", bad[4:]], f"--iou {bad[4:]}: must be in (0, 1]"
    elif bad == "far_away":
        gt = named = _shifted_gt(case, tmp_path / "far.gpkg", dx=10000.0)
    else:  # coordinates of zone 33 read as zone 34: 6 degrees away
        gt = named = _shifted_gt(case, tmp_path / "zone34.gpkg", crs="EPSG:32634")
    with pytest.raises(SystemExit) as e:
        main(["--predictions", pred, "--ground-truth", gt, "--output-dir", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("evaluate_raster: error: "), err
    assert named in err[0], err


def test_coco_ap_keeps_more_than_100_detections():
    """150 perfect detections on one raster: AP 1.0 (COCOeval's default maxDets 100 would cut a third)."""
    boxes = np.array([[x, y, x + 8, y + 8] for x in range(0, 300, 20) for y in range(0, 200, 20)], np.float64)
    labels = np.array(["a"] * len(boxes), object)
    truth = RasterTruth("r.tif", 300, 200, None, boxes, labels, boxes, np.linspace(1, 0.1, len(boxes)), labels)
    ap = coco_ap([truth], ["a"])
    assert ap["max_dets"] == 150 and ap["AP"] == pytest.approx(1.0) and ap["per_class"]["a"] == pytest.approx(1.0)


def test_labels_shared_with_none_of_the_ground_truths_are_refused_naming_both(case, tmp_path, capsys):
    # Detections labelled by class id ("0", "1", ...) against ground truth labelled by name: no
    # detection can match within label; the tool says so instead of reporting 0 true positives.
    root = case["root"]
    dets = gpd.read_file(root / "det.gpkg")
    dets["label"] = dets["class_id"].astype(str)
    dets.to_file(tmp_path / "ids.gpkg")
    with pytest.raises(SystemExit) as e:
        main(["--predictions", str(tmp_path / "ids.gpkg"), "--ground-truth", str(root / "gt.gpkg"), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("evaluate_raster: error: "), err
    assert "share none with those of" in err[0] and "'0'" in err[0] and repr(case["scene"].class_names[0]) in err[0], err
    assert not (tmp_path / "o").exists()
    # --class-agnostic matches them without labels: the class-agnostic counts of the same detections.
    main(["--predictions", str(tmp_path / "ids.gpkg"), "--ground-truth", str(root / "gt.gpkg"), "--output-dir",
          str(tmp_path / "agnostic"), "--class-agnostic", "--iou", "0.4"])  # fmt: skip
    metrics = json.loads((tmp_path / "agnostic" / "evaluation.json").read_text())
    assert metrics["matching"] == "class-agnostic" and counts_of(metrics, "0.4") == case["counts"]["agnostic 0.4"]
