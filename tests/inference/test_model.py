"""
One way to get a model ready (retina_plugin.inference.model): the YAML path (`load_model`,
MODEL.RETINA_PLUGIN and TEST.AUG) and the LazyConfig path (`load_lazy_model`, the config's
`inference` node) make the same int8, tiled, test-time-augmented model with the same detections;
the LazyConfig evaluation reads the node; a checkpoint's class names reach the model.
"""
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

from retina_plugin import load_config
from retina_plugin.compare import compare_detections
from retina_plugin.engine.lazy_trainer import do_test
from retina_plugin.inference.int8 import Int8Error, calibrate_int8, save_int8_calibration, weights_fingerprint
from retina_plugin.inference.model import (
    InferenceSettings,
    inference_model,
    lazy_inference_settings,
    load_lazy_model,
    load_model,
)
from retina_plugin.inference.tiling import TiledInference
from retina_plugin.inference.tta import RetinaNetWithTTA
from retina_plugin.weights.checkpoint import RetinaCheckpointer

REPO = Path(__file__).resolve().parents[2]


def _images(seed=5):
    g = torch.Generator().manual_seed(seed)
    return [{"image": (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)} for h, w in ((128, 160), (112, 96))]


@pytest.fixture
def weights(tmp_path):
    """Random shapes_R18_cpu weights with class biases spread, so that there are detections to compare."""
    model = build_model(load_config(str(REPO / "configs" / "shapes_R18_cpu.yaml"), ["MODEL.WEIGHTS", ""]))
    state = model.state_dict()
    state["head.cls_score.bias"] = torch.randn(state["head.cls_score.bias"].shape, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "weights.pth"
    torch.save({"model": state}, path)
    return str(path)


def test_every_inference_key_acts_the_same_on_the_yaml_and_the_lazyconfig_path(weights, tmp_path, single_thread):
    yaml_cfg = load_config(str(REPO / "configs" / "shapes_R18_cpu.yaml"), ["MODEL.WEIGHTS", weights])
    float_model = load_model(yaml_cfg)
    calibration = str(tmp_path / "int8.json")
    ranges = calibrate_int8(float_model, [[x] for x in _images(seed=9)])
    save_int8_calibration(calibration, ranges, weights_fingerprint=weights_fingerprint(float_model))

    yaml_cfg.merge_from_list([
        "MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", "int8", "MODEL.RETINA_PLUGIN.INT8_CALIBRATION", calibration,
        "MODEL.RETINA_PLUGIN.TILE_SIZE", 64, "MODEL.RETINA_PLUGIN.TILE_OVERLAP", 0.25, "MODEL.RETINA_PLUGIN.TILE_BATCH", 2,
        "TEST.AUG.ENABLED", True, "TEST.AUG.MIN_SIZES", (64, 96), "TEST.AUG.MAX_SIZE", 200, "MODEL.RETINA_PLUGIN.TTA_MERGE", "wbf",
    ])  # fmt: skip
    lazy = LazyConfig.load(str(REPO / "configs" / "shapes_R18_cpu.py"))
    lazy.model.inference_dtype = "int8"
    lazy.inference.update(
        int8_calibration=calibration, tile_size=64, tile_overlap=0.25, tile_batch=2,
        tta=True, tta_min_sizes=[64, 96], tta_max_size=200, tta_merge="wbf",
    )  # fmt: skip
    assert lazy_inference_settings(lazy) == InferenceSettings.from_config(yaml_cfg)

    runners = [
        inference_model(load_model(yaml_cfg), InferenceSettings.from_config(yaml_cfg)),
        inference_model(load_lazy_model(lazy, weights), lazy_inference_settings(lazy)),
    ]
    for runner in runners:
        assert isinstance(runner, TiledInference) and (runner.tile_size, runner.overlap, runner.tile_batch) == (64, 0.25, 2)
        assert isinstance(runner.model, RetinaNetWithTTA) and runner.model.merge == "wbf"
        assert runner.model.tta_mapper.min_sizes == (64, 96) and runner.model.model.int8
    with torch.no_grad():
        yaml_out, lazy_out = (runner(_images()) for runner in runners)
    for a, b in zip(yaml_out, lazy_out):
        assert len(a["instances"]) > 0
        comparison = compare_detections(b["instances"], a["instances"], min_iou=0.99, score_atol=1e-3)
        assert comparison["match"], comparison


def test_lazyconfig_evaluation_reads_the_inference_node(weights, tmp_path):
    lazy = LazyConfig.load(str(REPO / "configs" / "shapes_R18_cpu.py"))
    lazy.model.inference_dtype = "int8"
    lazy.inference.int8_calibration = str(tmp_path / "missing.json")
    with pytest.raises(Int8Error, match="missing.json"):
        load_lazy_model(lazy, weights)
    # The model under training (float32 convolutions) is made int8 for its evaluation, from the node's file.
    with pytest.raises(Int8Error, match="missing.json"):
        do_test(lazy, instantiate(lazy.model))
    lazy.inference.tile_overlap = 1.5
    with pytest.raises(ValueError, match=r"inference.tile_overlap = 1.5: must be in \[0, 1\)"):
        lazy_inference_settings(lazy)


def test_checkpoints_record_class_names_and_load_model_reads_them(weights, tmp_path):
    cfg = load_config(str(REPO / "configs" / "shapes_R18_cpu.yaml"), ["MODEL.WEIGHTS", weights])
    model = load_model(cfg)
    assert model.class_names is None  # a bare state_dict names no classes
    RetinaCheckpointer(model, str(tmp_path), class_names=["circle", "square", "triangle"]).save("named")
    assert torch.load(tmp_path / "named.pth", weights_only=True)["class_names"] == ["circle", "square", "triangle"]
    assert load_model(cfg, str(tmp_path / "named.pth")).class_names == ["circle", "square", "triangle"]
