"""The YAML configs, the config checks (bad values, moved keys), and the package's import-time checks."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from retina_plugin import check_retina_plugin_config, get_retina_plugin_cfg

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
ROTATED_CONFIGS = ("rotated_shapes_R18.yaml",)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_yaml_loads_safely_and_merges(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)  # no !!python tags
    cfg = get_retina_plugin_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.META_ARCHITECTURE == "RetinaNetPlugin"
    assert cfg.MODEL.BACKBONE.NAME == "build_retina_plugin_resnet_fpn_backbone"
    # The rotated model takes Detectron2's RotatedAnchorGenerator (docs/rotated.md).
    assert cfg.MODEL.ANCHOR_GENERATOR.NAME == ("RotatedAnchorGenerator" if path.name in ROTATED_CONFIGS else "RetinaAnchorGenerator")


@pytest.mark.parametrize("name,depth", [("retinanet_R50.yaml", 50), ("retinanet_R101.yaml", 101)])
def test_paper_schedule(name, depth):
    cfg = get_retina_plugin_cfg()
    cfg.merge_from_file(str(REPO / "configs" / name))
    assert cfg.MODEL.RESNETS.DEPTH == depth
    assert cfg.MODEL.WEIGHTS == f"detectron2://ImageNetPretrained/MSRA/R-{depth}.pkl"
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.BASE_LR == 0.01
    assert tuple(cfg.SOLVER.STEPS) == (60000, 80000)
    assert cfg.SOLVER.MAX_ITER == 90000
    assert cfg.SOLVER.MOMENTUM == 0.9
    assert cfg.SOLVER.WEIGHT_DECAY == 1e-4
    assert cfg.SOLVER.WARMUP_ITERS > 0 and cfg.SOLVER.WARMUP_METHOD == "linear"
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MIN_SIZE_TEST == 800
    assert cfg.INPUT.RANDOM_FLIP == "horizontal"
    assert tuple(cfg.DATASETS.TRAIN) == ("coco_2017_train",)
    assert tuple(cfg.DATASETS.TEST) == ("coco_2017_val",)
    node = cfg.MODEL.RETINANET
    assert node.NUM_CLASSES == 80
    assert list(node.IN_FEATURES) == ["p3", "p4", "p5", "p6", "p7"]
    # Paper section 4: base sizes 32..512 on P3..P7, octave scales 2^0, 2^(1/3), 2^(2/3), ratios 1:2, 1:1, 2:1.
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in [32, 64, 128, 256, 512]]
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.5, 1.0, 2.0]]
    assert cfg.MODEL.ANCHOR_GENERATOR.OFFSET == 0.0
    assert (node.FOCAL_LOSS_ALPHA, node.FOCAL_LOSS_GAMMA, node.PRIOR_PROB, node.NUM_CONVS) == (0.25, 2.0, 0.01, 4)
    assert list(node.IOU_THRESHOLDS) == [0.4, 0.5] and list(node.IOU_LABELS) == [0, -1, 1]
    assert node.SMOOTH_L1_LOSS_BETA == 0.11  # the paper's 1/9 (sigma 3); Detectron2's Base-RetinaNet uses 0
    assert (node.SCORE_THRESH_TEST, node.TOPK_CANDIDATES_TEST, node.NMS_THRESH_TEST) == (0.05, 1000, 0.5)
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100


def test_import_without_detectron2_says_how_to_install():
    # sys.modules[name] = None makes `import name` raise ImportError, as on a machine without it.
    code = "import sys; sys.modules['detectron2'] = None; import retina_plugin"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "retina_plugin needs Detectron2" in proc.stderr
    assert "git+https://github.com/facebookresearch/detectron2.git" in proc.stderr
    assert "make setup" in proc.stderr



@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256]]),
        ("MODEL.ANCHOR_GENERATOR.SIZES", [[32, 40], [64], [128], [256], [512]]),
        ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", []),
        ("MODEL.ANCHOR_GENERATOR.OFFSET", 1.0),
        ("MODEL.RETINANET.IOU_THRESHOLDS", [0.6, 0.5]),
        ("MODEL.RETINANET.IOU_LABELS", [0, 1]),
        ("MODEL.RETINANET.IOU_LABELS", [0, 2, 1]),
        ("MODEL.RETINANET.NUM_CLASSES", 0),
        ("MODEL.RETINANET.NORM", "XYZ"),
        ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "l2"),
        ("MODEL.RETINANET.PRIOR_PROB", 0.0),
        ("MODEL.RETINANET.FOCAL_LOSS_GAMMA", -1.0),
        ("MODEL.RETINANET.TOPK_CANDIDATES_TEST", 0),
        ("TEST.DETECTIONS_PER_IMAGE", 0),
        ("MODEL.RETINA_PLUGIN.P6_SOURCE", "res4"),
        ("MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", "int4"),
        ("MODEL.RETINA_PLUGIN.INT8_CALIBRATION", ""),
    ],
)
def test_bad_config_is_refused_by_the_check_naming_key_and_value(small_cfg, key, value):
    node_name, name = key.rsplit(".", 1)
    node = small_cfg
    for part in node_name.split("."):
        node = node[part]
    node[name] = value
    if name == "INT8_CALIBRATION":  # int8 needs the calibration file
        small_cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "int8"
    with pytest.raises(ValueError) as excinfo:
        check_retina_plugin_config(small_cfg)  # what load_config runs before anything is built
    message = str(excinfo.value)
    assert f"cfg.{key} = {value!r}" in message or (name == "INT8_CALIBRATION" and "INT8_CALIBRATION" in message)


@pytest.mark.parametrize("old, new", [
    ("NUM_CLASSES", "MODEL.RETINANET.NUM_CLASSES"),
    ("ANCHOR_SIZES", "MODEL.ANCHOR_GENERATOR.SIZES"),
    ("FG_IOU_THRESHOLD", "MODEL.RETINANET.IOU_THRESHOLDS"),
    ("SMOOTH_L1_BETA", "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA"),
    ("DETECTIONS_PER_IMAGE", "TEST.DETECTIONS_PER_IMAGE"),
])
def test_moved_key_set_in_code_fails_the_check_naming_the_new_key(small_cfg, old, new):
    small_cfg.MODEL.RETINA_PLUGIN[old] = 5
    with pytest.raises(ValueError, match=re.escape(f"cfg.MODEL.RETINA_PLUGIN.{old} = 5: is not a key of MODEL.RETINA_PLUGIN; it moved to {new}")):
        check_retina_plugin_config(small_cfg)
