"""
The README's Python API example, run as it is written (a real subprocess from a folder laid out
as `make run` leaves the repository: the shapes config, a checkpoint at
output/shapes_R18_cpu/model_final.pth that records its class names), its values checked against
the tools' paths: the predictor's detections, COCOeval on the results file the evaluation wrote,
and predict_raster's layer.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import RotatedBoxes
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina_plugin import load_config
from retina_plugin.api import Detector
from retina_plugin.data.coco_json import DatasetError
from retina_plugin.data.shapes import SHAPES_CLASSES
from retina_plugin.geo.predict import predict_rasters
from retina_plugin.inference.media import read_bgr_image
from retina_plugin.inference.predictor import RetinaPredictor
from retina_plugin.weights.checkpoint import RetinaCheckpointer
from tool_runs import BASE_CONFIG, ROTATED_OPTS, SMALL_MODEL_OPTS

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- python-api-example: tests/test_api.py runs this block -->"


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index(MARKER) + len(MARKER):]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_readme_python_api_example(tmp_path, single_thread):
    (tmp_path / "configs").mkdir()
    for name in ("Base-RetinaNetPlugin.yaml", "shapes_R18_cpu.yaml"):
        shutil.copy(REPO / "configs" / name, tmp_path / "configs" / name)
    cfg = load_config(str(tmp_path / "configs" / "shapes_R18_cpu.yaml"), ["MODEL.RETINANET.PRIOR_PROB", 0.2])
    torch.manual_seed(0)
    model = build_model(cfg)  # random weights; PRIOR_PROB 0.2 gives detections to compare
    RetinaCheckpointer(model, str(tmp_path / "output" / "shapes_R18_cpu"), class_names=SHAPES_CLASSES).save("model_final")

    dump = """
import json
json.dump({"boxes": instances.pred_boxes.tensor.tolist(), "scores": instances.scores.tolist(),
           "classes": instances.pred_classes.tolist(), "table": table.to_dict("list"), "metrics": metrics,
           "scene": len(scene), "scene_labels": sorted(set(scene["label"])), "scene_crs": scene.crs.to_string()},
          open("api.json", "w"))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RETINA_PLUGIN_DATASETS", "DETECTRON2_DATASETS")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-c", readme_example() + dump], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert re.search(r"\d+ detections, AP \d+\.\d, \d+ objects in the scene", proc.stdout), proc.stdout
    got = json.loads((tmp_path / "api.json").read_text())

    # predict: what Detectron2's DefaultPredictor path (RetinaPredictor) gives on the image
    cfg.MODEL.WEIGHTS = str(tmp_path / "output" / "shapes_R18_cpu" / "model_final.pth")
    image = tmp_path / "datasets" / "retina_shapes" / "val" / "000000.png"
    expected = RetinaPredictor(cfg)(read_bgr_image(str(image)))["instances"]
    assert len(got["boxes"]) == len(expected) > 0
    assert torch.allclose(torch.tensor(got["boxes"]), expected.pred_boxes.tensor, atol=1e-3)
    assert got["classes"] == expected.pred_classes.tolist()
    # predict_frame: the same detections, labelled with the checkpoint's class names
    assert got["table"]["score"] == got["scores"]
    assert list(got["table"])[:4] == ["xmin", "ymin", "xmax", "ymax"]
    assert torch.equal(torch.tensor([got["table"][k] for k in ("xmin", "ymin", "xmax", "ymax")]).T, torch.tensor(got["boxes"]))
    assert got["table"]["label"] == [SHAPES_CLASSES[c] for c in got["classes"]]

    # evaluate: COCO AP of the detections it wrote, as pycocotools computes it
    truth = COCO(str(tmp_path / "datasets" / "retina_shapes" / "annotations" / "instances_val.json"))
    results = tmp_path / "output" / "shapes_R18_cpu" / "inference" / "shapes_val" / "coco_instances_results.json"
    evaluation = COCOeval(truth, truth.loadRes(str(results)), "bbox")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert abs(got["metrics"]["AP"] - 100 * evaluation.stats[0]) < 1e-6

    # predict_raster: the layer tools/predict_raster.py writes for the scene
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE = 512
    reference = predict_rasters(cfg, [str(tmp_path / "scene.tif")], str(tmp_path / "reference.gpkg"), progress=False)
    assert got["scene"] == len(reference[0].boxes) > 0
    assert set(got["scene_labels"]) <= set(SHAPES_CLASSES) and got["scene_crs"] == "EPSG:32633"


@pytest.fixture(scope="module")
def rotated_detector(tmp_path_factory):
    """A Detector of a rotated RetinaNetPlugin: random ResNet-18 weights saved as a checkpoint."""
    # PRIOR_PROB 0.3 puts the scores near 0.3, so it detects (random) boxes.
    opts = [*SMALL_MODEL_OPTS, *ROTATED_OPTS, "MODEL.RETINANET.PRIOR_PROB", "0.3",
            "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "100", "TEST.DETECTIONS_PER_IMAGE", "30"]  # fmt: skip
    cfg = load_config(str(REPO / BASE_CONFIG), opts)
    root = tmp_path_factory.mktemp("rotated_api")
    torch.manual_seed(0)
    RetinaCheckpointer(build_model(cfg), str(root)).save("model")
    return Detector.from_config(cfg, weights=root / "model.pth", opts=["OUTPUT_DIR", str(root / "output")])


def test_predict_frame_of_a_rotated_model_has_xywha_columns(rotated_detector, single_thread):
    """A rotated model's frame has Detectron2's XYWHA columns cx, cy, w, h, angle (a horizontal one's xmin..ymax: above)."""
    detector = rotated_detector
    image = np.random.default_rng(0).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    instances, frame = detector.predict(image), detector.predict_frame(image)

    columns = ["cx", "cy", "w", "h", "angle"]
    assert list(frame.columns) == [*columns, "score", "class_id", "label"]
    assert isinstance(instances.pred_boxes, RotatedBoxes)
    assert len(frame) == len(instances) == 30
    np.testing.assert_array_equal(frame[columns].to_numpy(), instances.pred_boxes.tensor.numpy())
    np.testing.assert_array_equal(frame.score.to_numpy(), instances.scores.numpy())
    assert np.abs(frame.angle.to_numpy()).max() > 0.1  # turned by the regression, not horizontal boxes
    # Labelled by the class names of the config's DATASETS.TEST (COCO's, from Detectron2's catalog)
    assert detector.class_names[:2] == ["person", "bicycle"]
    assert list(frame.label) == [detector.class_names[c] for c in instances.pred_classes.tolist()]


def test_evaluate_with_a_rotated_model_refuses_a_json_of_4_number_boxes(rotated_detector, tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "images" / "0.png")
    json_file = tmp_path / "horizontal.json"
    json_file.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "0.png", "height": 64, "width": 96}], "categories": [{"id": 1, "name": "ship"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 20], "area": 600, "iscrowd": 0}],
    }))  # fmt: skip
    with pytest.raises(DatasetError) as e:
        rotated_detector.evaluate((json_file, tmp_path / "images"))
    assert str(e.value).startswith(f"Invalid COCO json {json_file}: annotations[0] (id 5) has bbox [1, 2, 30, 20]: 4 numbers")
    assert not os.path.exists(rotated_detector.cfg.OUTPUT_DIR)  # refused before anything is written
