"""
The one COCOeval of the package (retina_plugin.evaluation.cocoeval): faster-coco-eval's compiled
COCOeval gives pycocotools' numbers on coco_sets' generated set (the 12 stats, eval's precision /
recall / scores, the printed summary, evaluate_boxes' per-detection matches), FastCOCOEvaluator's
results equal Detectron2's COCOEvaluator's, and without faster-coco-eval pycocotools runs, saying so once.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from coco_sets import CROWDED_IMAGE, NUM_CLASSES, arrays, assert_same_matches, coco, generated_set
from retina_plugin.evaluation import (
    COCO_IOU_THRESHOLDS, FastCOCOEvaluator, cocoeval_class, cocoeval_name, compiled_available, evaluate_boxes,
    evaluate_coco_boxes,
)  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
ULP_AT_1 = 2.3e-16  # float64 spacing below 1.0: C++ and numpy sums round the last bit apart


def summary_lines(printed: str):
    return [line for line in printed.splitlines() if line.startswith(" Average")]


def run_both(max_dets):
    """evaluate_coco_boxes by pycocotools and by faster-coco-eval: (COCOeval, printed summary lines) each."""
    gt_dict, results = generated_set()
    runs = []
    for fast in (False, True):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            ev = evaluate_coco_boxes(coco(gt_dict), [dict(r) for r in results], [1, 10, max_dets], use_fast_impl=fast)
        runs.append((ev, summary_lines(printed.getvalue())))
    return runs


def test_faster_coco_eval_is_the_default():
    """The venv installs it (setup.py, scripts/setup_venv.sh), so the suite runs the compiled path."""
    assert compiled_available()
    assert cocoeval_name(cocoeval_class()).startswith("faster-coco-eval ")
    assert cocoeval_name(cocoeval_class(use_fast_impl=False)).startswith("pycocotools ")


@pytest.mark.parametrize("max_dets", [100, 300])
def test_stats_arrays_and_summary_are_pycocotools(max_dets):
    (ref, ref_lines), (fast, fast_lines) = run_both(max_dets)
    assert type(fast).__module__ == "retina_plugin.evaluation.cocoeval"  # the compiled one ran
    assert len(ref.stats) == 12 and ref.stats[0] > 0.1 and ref.stats[11] > 0.1
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=ULP_AT_1)
    np.testing.assert_allclose(fast.eval["precision"], ref.eval["precision"], rtol=0, atol=ULP_AT_1)
    np.testing.assert_array_equal(fast.eval["recall"], ref.eval["recall"])
    np.testing.assert_array_equal(fast.eval["scores"], ref.eval["scores"])
    assert fast_lines == ref_lines and len(ref_lines) == 12
    assert f"maxDets={max_dets:>3d}" in ref_lines[0]


def test_max_dets_beyond_100_counts():
    """maxDets 300 evaluates the crowded image's 250 detections (Detectron2's COCOevalMaxDets summary)."""
    (at_100, _), _ = run_both(100)
    (at_300, _), (fast_300, _) = run_both(300)
    assert at_300.stats[8] != at_100.stats[8]  # AR at maxDets N
    assert fast_300.stats[8] == pytest.approx(at_300.stats[8], abs=ULP_AT_1)


@pytest.mark.parametrize("max_dets", [None, 100])
def test_evaluate_boxes_matches_are_pycocotools(max_dets):
    """Every per-detection and per-box array of evaluate_boxes, at COCO's IoUs and TIDE's / the rasters' others."""
    gt, dets, num_images, num_classes = arrays(*generated_set())
    thresholds = np.r_[COCO_IOU_THRESHOLDS, 0.1, 0.4]
    ref, fast = (
        evaluate_boxes(gt, dets, num_images, num_classes, thresholds, max_dets, ("all", "small", "medium", "large"), use)
        for use in (False, True)
    )  # fmt: skip
    assert len(fast.class_rows) == len(ref.class_rows) == NUM_CLASSES
    assert_same_matches(fast, ref, precision_atol=ULP_AT_1)
    # the set has what is checked: crowd matches, unmatched boxes, a class without ground truth, cut detections
    crowded = dets.image == CROWDED_IMAGE - 1
    assert (ref.det_ignored[0] & (ref.det_gt[0] >= 0)).sum() > 10 and (~ref.gt_matched[0]).sum() > 10
    assert ref.num_gt[-1] == 0 and (dets.label == num_classes - 1).any()
    assert ref.det_ignored[:, crowded].sum() > (150 * len(thresholds) if max_dets == 100 else 0)


def register(gt_dict, name):
    """gt_dict as a Detectron2 dataset (contiguous class ids), converted to COCO json by the evaluator.
    Registered afresh: the evaluator caches that json in its output_dir (the metadata's json_file), another
    test's tmp_path that pytest removes once that test passes."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    dicts = [
        {"file_name": f"{im['id']}.png", "image_id": im["id"], "height": im["height"], "width": im["width"],
         "annotations": [{"bbox": a["bbox"], "bbox_mode": BoxMode.XYWH_ABS, "category_id": a["category_id"] - 1,
                          "iscrowd": a["iscrowd"]} for a in gt_dict["annotations"] if a["image_id"] == im["id"]]}
        for im in gt_dict["images"]
    ]  # fmt: skip
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=[c["name"] for c in gt_dict["categories"]], evaluator_type="coco")
    return name


def evaluator_results(evaluator, results):
    """The evaluator fed the results as model outputs (Instances, contiguous classes); its results and summary."""
    evaluator.reset()
    for image_id in sorted({r["image_id"] for r in results}):
        rows = [r for r in results if r["image_id"] == image_id]
        instances = Instances((1000, 1000))
        xywh = torch.tensor([r["bbox"] for r in rows], dtype=torch.float64)
        instances.pred_boxes = Boxes(BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS).float())
        instances.scores = torch.tensor([r["score"] for r in rows])
        instances.pred_classes = torch.tensor([r["category_id"] - 1 for r in rows])
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        res = evaluator.evaluate()
    return res["bbox"], summary_lines(printed.getvalue())


@pytest.mark.parametrize("max_dets", [None, 300])
def test_fast_coco_evaluator_equals_detectron2s(tmp_path, max_dets):
    """Same results dict (percent, per class too), summary lines and results file as COCOEvaluator's official path."""
    gt_dict, results = generated_set(seed=1)
    name = register(gt_dict, "coco_eval_generated_set")
    kwargs = dict(output_dir=str(tmp_path), max_dets_per_image=max_dets, distributed=False)
    fast, fast_lines = evaluator_results(FastCOCOEvaluator(name, **kwargs), results)
    written = json.loads((tmp_path / "coco_instances_results.json").read_text())
    ref, ref_lines = evaluator_results(COCOEvaluator(name, use_fast_impl=False, **kwargs), results)
    assert list(fast) == list(ref) and len(ref) == 6 + NUM_CLASSES and ref["AP"] > 10
    for key in ref:
        assert fast[key] == pytest.approx(ref[key], abs=1e-6 * 100, nan_ok=True), key
    assert fast_lines == ref_lines and len(ref_lines) == 12
    assert written == json.loads((tmp_path / "coco_instances_results.json").read_text())


FALLBACK = """
import contextlib, io, sys
sys.modules["faster_coco_eval"] = None  # a real ImportError, as where it is not installed
from coco_sets import arrays, coco, generated_set
from retina_plugin.evaluation import cocoeval_class, cocoeval_name, compiled_available, evaluate_boxes, evaluate_coco_boxes
gt_dict, results = generated_set()
print(compiled_available(), cocoeval_name(cocoeval_class()), cocoeval_name(cocoeval_class(max_dets=300)))
print(evaluate_boxes(*arrays(gt_dict, results)).mean_ap())
with contextlib.redirect_stdout(io.StringIO()):
    stats = evaluate_coco_boxes(coco(gt_dict), results).stats
print(*stats)
"""


def test_without_faster_coco_eval_pycocotools_runs_and_says_so_once():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    proc = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names, mean_ap, stats = proc.stdout.splitlines()[-3:]
    assert names.startswith("False pycocotools ") and "faster" not in names
    notices = [line for line in proc.stderr.splitlines() if "faster-coco-eval" in line]
    assert len(notices) == 1 and "pip install faster-coco-eval" in notices[0], proc.stderr[-3000:]
    gt_dict, results = generated_set()
    assert float(mean_ap) == pytest.approx(evaluate_boxes(*arrays(gt_dict, results)).mean_ap(), abs=ULP_AT_1)
    with contextlib.redirect_stdout(io.StringIO()):
        compiled_stats = evaluate_coco_boxes(coco(gt_dict), results).stats
    np.testing.assert_allclose([float(s) for s in stats.split()], compiled_stats, rtol=0, atol=1e-15)


@pytest.mark.parametrize("config", ["shapes_R18_cpu.py", "retinanet_R50.py", "retinanet_R101.py"])
def test_lazyconfigs_evaluate_with_fast_coco_evaluator(config):
    from detectron2.config import LazyConfig

    assert LazyConfig.load(str(REPO / "configs" / config)).dataloader.evaluator._target_ is FastCOCOEvaluator


@pytest.mark.parametrize("tile_size", [0, 512])
def test_build_evaluator_is_fast_coco_evaluator(tmp_path, tile_size):
    """train_net's, analyze_results', calibration's and the API's evaluator, tiled (maxDets beyond 100) or not."""
    from retina_plugin import load_config
    from retina_plugin.inference.evaluation import build_evaluator

    cfg = load_config(str(REPO / "configs" / "Base-RetinaNetPlugin.yaml"), ["MODEL.RETINA_PLUGIN.TILE_SIZE", str(tile_size)])
    evaluator = build_evaluator(cfg, register(generated_set(seed=1)[0], "coco_eval_generated_set"), str(tmp_path))
    assert type(evaluator) is FastCOCOEvaluator and evaluator._use_fast_impl
    assert (evaluator._max_dets_per_image[2] > 100) == (tile_size > 0)
