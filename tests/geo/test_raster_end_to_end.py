"""
The geospatial workflow end to end, as docs/geospatial.md runs it: train_net.py trains
configs/scenes_narrow_R50_cpu.yaml (the tiny detector of tests/tiny_detector.py) from random
weights on a generated GeoTIFF and its vectors, then
predict_raster.py detects on a second raster, and evaluate_raster.py scores that against the
second raster's vectors: the model finds its objects (recall at IoU 0.5).
"""
import json

import geopandas as gpd

from retina_plugin.geo.scenes import write_shapes_scene
from tool_runs import REPO, run_tool

# The config's 500 iterations leave the detector less sure than tiny_detector.py's own loop
# (0.5): at 0.3 it keeps most objects (recall@0.5 0.865, precision@0.5 0.892, AP50 0.836 seen here).
SCORE = 0.3


def test_model_trained_on_a_raster_finds_the_objects_of_another(tmp_path):
    train = write_shapes_scene(str(tmp_path / "train.tif"), 1536, seed=11, vectors=str(tmp_path / "train.gpkg"), single_class=True)
    test = write_shapes_scene(str(tmp_path / "test.tif"), 640, seed=12, border=64, vectors=str(tmp_path / "test.geojson"), single_class=True)
    out = tmp_path / "run"
    run_tool(
        "tools/train_net.py", "--config-file", str(REPO / "configs" / "scenes_narrow_R50_cpu.yaml"),
        "--train-raster", train.path, "--train-vectors", str(tmp_path / "train.gpkg"), "SEED", "3", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    detections = tmp_path / "detections.gpkg"
    run_tool(
        "tools/predict_raster.py", "--config-file", str(out / "config.yaml"), "--input", test.path,
        "--output", str(detections), "--tile", "256", "--overlap", "0.25", "--no-progress",
        "--confidence-threshold", str(SCORE), "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"),
    )  # fmt: skip
    # No --classes: the checkpoint training wrote records the vectors' class names.
    assert set(gpd.read_file(detections).label) == {"shape"}
    run_tool(
        "tools/evaluate_raster.py", "--predictions", str(detections), "--ground-truth", str(tmp_path / "test.geojson"),
        "--output-dir", str(tmp_path / "evaluation"),
    )  # fmt: skip
    metrics = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    overall = metrics["overall"]
    at_05 = overall["iou"]["0.5"]
    print(f"\nrecall@0.5 {at_05['recall']:.3f}, precision@0.5 {at_05['precision']:.3f}, AP50 {overall['coco']['AP50']:.3f}")
    assert overall["ground_truth"] == len(test.boxes) > 50
    assert at_05["tp"] + at_05["fn"] == len(test.boxes)
    assert at_05["recall"] >= 0.7 and at_05["precision"] >= 0.7
