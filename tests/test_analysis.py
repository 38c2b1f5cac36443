"""
Anchor coverage analysis (retina_plugin.analysis, tools/analyze_anchors.py) on small COCO
datasets written under tmp_path, checked against brute force: Detectron2's pairwise_iou on
every anchor of the real model, its DatasetMapper's resizing and RetinaNetPlugin.label_anchors.
"""
import importlib.util
import json
import os
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou

from retina_plugin import load_config
from retina_plugin.analysis import anchor_coverage
from retina_plugin.analysis import (
    AnchorCoverageError,
    AnchorGrid,
    AnchorSetting,
    analyze_anchor_coverage,
    best_iou_on_grid,
    format_anchor_coverage_report,
    load_resized_boxes,
    measure_anchor_coverage,
    suggest_anchor_setting,
)
from retina_plugin.data import register_coco_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(REPO_ROOT, "configs", "Base-RetinaNetPlugin.yaml")
SHAPES_CONFIG = os.path.join(REPO_ROOT, "configs", "shapes_R18_cpu.yaml")
ANCHOR_KEYS = ["MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"]  # what a suggestion sets
# ResNet-18 for a fast backbone build; images are resized to a shorter side of 256.
SMALL_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.RETINANET.NUM_CONVS", "1",
    "MODEL.RETINANET.NUM_CLASSES", "1",
    "INPUT.MIN_SIZE_TRAIN", "(256,)",
    "INPUT.MAX_SIZE_TRAIN", "512",
    "INPUT.RANDOM_FLIP", "none",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_cfg(*opts):
    """The base config with SMALL_OPTS and `opts`, checked as every tool loads it."""
    return load_config(BASE_CONFIG, SMALL_OPTS + list(opts))


def write_coco(root, name, images):
    """
    Write a COCO dataset under `root`: `images` is a list of (height, width, XYWH boxes); each
    image is grey with its boxes filled. Registers it as `name`; returns (json path, image dir).
    """
    image_dir = os.path.join(root, name)
    os.makedirs(image_dir, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i, (height, width, boxes) in enumerate(images):
        picture = np.full((height, width, 3), 120, np.uint8)
        for x, y, w, h in boxes:
            cv2.rectangle(picture, (int(x), int(y)), (int(x + w), int(y + h)), (40, 200, 240), -1)
        file_name = f"{i:04d}.png"
        cv2.imwrite(os.path.join(image_dir, file_name), picture)
        coco["images"].append({"id": i + 1, "file_name": file_name, "height": height, "width": width})
        for box in boxes:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": 1,
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })
    json_path = os.path.join(root, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(coco, f)
    register_coco_json(name, json_path, image_dir)
    return json_path, image_dir


def elongated_boxes(rng, count, image_size=256):
    """Thin boxes 8-14 px across and 3-5 times as long, half of them lying down."""
    boxes = []
    for _ in range(count):
        w = rng.uniform(8, 14)
        h = w * rng.uniform(3, 5)
        if rng.random() < 0.5:
            w, h = h, w
        boxes.append([rng.uniform(0, image_size - w), rng.uniform(0, image_size - h), w, h])
    return boxes


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("anchor_datasets"))
    rng = np.random.default_rng(0)
    # "mixed": images needing a resize (200x330 -> 256x422, padded to 256x512), boxes from
    # 3 px to most of the image, near-duplicates that compete for the same anchors, boxes on
    # the border; and one 256x256 image with exact ties: two boxes of the same IoU with the
    # square 32x32 anchor at (80, 80), and a 4x4 box halfway between anchor centres.
    mixed = []
    for _ in range(3):
        boxes = []
        for _ in range(10):
            w, h = np.exp(rng.uniform(np.log(3), np.log(180), size=2))
            boxes.append([rng.uniform(0, 330 - w), rng.uniform(0, 200 - h), w, h])
        boxes += [[b[0] + 2.5, b[1] + 1.5, b[2], b[3]] for b in boxes[:3]]
        boxes.append([0.0, 150.0, 40.0, 50.0])
        mixed.append((200, 330, boxes))
    mixed.append((256, 256, [[60.0, 64.0, 32.0, 32.0], [68.0, 64.0, 32.0, 32.0], [10.0, 200.0, 4.0, 4.0]]))
    # "exact": a box equal to the 32x32 square anchor at (80, 80) on P3, and 4x4 boxes far
    # below the smallest anchor (32 px).
    exact = [(256, 256, [[64.0, 64.0, 32.0, 32.0], [10.0, 200.0, 4.0, 4.0], [150.0, 30.0, 4.0, 4.0],
                         [203.0, 181.0, 4.0, 4.0]])]
    elongated = [(256, 256, elongated_boxes(rng, 5)) for _ in range(40)]
    return {
        "mixed": write_coco(root, "analysis_mixed", mixed),
        "exact": write_coco(root, "analysis_exact", exact),
        "elongated": write_coco(root, "analysis_elongated", elongated),
    }


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return build_model(small_cfg()).eval()


def model_anchors(model, image_size):
    """The anchors RetinaNetPlugin uses for an image of `image_size`, from a real backbone pass."""
    images = ImageList.from_tensors(
        [torch.zeros(3, *image_size)], model.backbone.size_divisibility,
        padding_constraints=model.backbone.padding_constraints,
    )
    with torch.no_grad():
        features = model.backbone(images.tensor)
    return [b.tensor for b in model.anchor_generator([features[f] for f in model.head_in_features])]


def test_box_equal_to_an_anchor_is_covered_and_tiny_boxes_are_not(datasets):
    cfg = small_cfg()
    resized = load_resized_boxes(cfg, "analysis_exact")
    coverage = measure_anchor_coverage(resized, AnchorGrid.from_config(cfg), cfg)
    assert coverage.best_iou[0] == 1.0
    assert coverage.covered.tolist() == [True, False, False, False]
    assert coverage.best_iou[1:].max() < 16 / 32**2 + 1e-6  # a 4x4 box inside a 32x32 anchor at best
    assert coverage.best_level.tolist()[0] == 0  # P3
    summary = coverage.summary()
    assert summary["all"]["num_covered"] == 1 and summary["all"]["coverage"] == 0.25
    assert summary["by_size"]["small"]["num_boxes"] == 3 and summary["by_size"]["small"]["coverage"] == 0.0
    assert summary["by_size"]["medium"]["coverage"] == 1.0  # 32x32 = 32^2 is medium
    # The uncovered boxes train only on their low-quality matches.
    assert (coverage.num_fg[1:].sum(1) == 0).all() and (coverage.num_positive[1:].sum(1) > 0).all()
    assert summary["boxes_with_low_quality_positives_only"] == 3

    no_low_quality = small_cfg("MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES", "False")
    coverage = measure_anchor_coverage(resized, AnchorGrid.from_config(no_low_quality), no_low_quality)
    assert (coverage.num_positive[1:] == 0).all() and coverage.num_positive[0].sum() > 0


@pytest.mark.parametrize("sizes, expected", [
    ("[32, 64]", ((32.0, 64.0),) * 5),  # a flat list: every level
    ("[[16, 20]]", ((16.0, 20.0),) * 5),  # one list: every level
    ("[[8], [16], [32], [64], [128]]", ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))),
])  # fmt: skip
@pytest.mark.parametrize("generator", ["RetinaAnchorGenerator", "DefaultAnchorGenerator"])
def test_anchor_setting_reads_detectron2_anchor_keys(sizes, expected, generator):
    cfg = small_cfg("MODEL.ANCHOR_GENERATOR.NAME", generator, "MODEL.ANCHOR_GENERATOR.SIZES", sizes,
                    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", str([[0.5, 1.0]] * 5))
    setting = AnchorSetting.from_config(cfg)
    assert setting == AnchorSetting(expected, ((0.5, 1.0),))  # equal per-level ratios read as one tuple
    grid = AnchorGrid.from_config(cfg)
    assert type(grid.generator).__name__ == generator
    for ours, theirs in zip(setting.level_cell_anchors(), grid.level_cell_anchors):
        assert torch.equal(ours, theirs)
    assert AnchorSetting.from_config(setting.apply_to(small_cfg())) == setting
    assert setting.to_dict() == {"SIZES": [list(s) for s in expected], "ASPECT_RATIOS": [[0.5, 1.0]]}

    per_level = AnchorSetting.from_config(small_cfg("MODEL.ANCHOR_GENERATOR.SIZES", sizes,
                                                    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", str([[1.0]] * 4 + [[2.0]])))
    assert per_level.aspect_ratios == ((1.0,),) * 4 + ((2.0,),)


def test_resizing_and_anchors_are_the_models(datasets, model):
    cfg = small_cfg()
    resized = load_resized_boxes(cfg, "analysis_mixed", "train")
    grid = AnchorGrid.from_config(cfg)
    mapper = DatasetMapper(cfg, is_train=True)  # no flip (RANDOM_FLIP none), one size: deterministic
    assert resized.image_sizes == [(256, 422)] * 3 + [(256, 256)]
    for record, boxes, size in zip(DatasetCatalog.get("analysis_mixed"), resized.boxes, resized.image_sizes):
        mapped = mapper(record)
        assert tuple(mapped["image"].shape[1:]) == size
        assert torch.equal(mapped["instances"].gt_boxes.tensor, boxes)
        for ours, theirs in zip(grid.anchors(size), model_anchors(model, size)):
            assert torch.equal(ours, theirs)


MATCHINGS = [  # IOU_THRESHOLDS, IOU_LABELS, then the foreground and background thresholds they give
    (None, None, 0.5, 0.4),  # the config's [0.4, 0.5], [0, -1, 1]
    ("[0.3, 0.6]", "[0, -1, 1]", 0.6, 0.3),
    ("[0.5]", "[0, 1]", 0.5, 0.5),
    ("[0.3, 0.45, 0.6]", "[0, -1, 1, 1]", 0.45, 0.3),
]


@pytest.mark.parametrize("pairs_per_chunk", [None, 500])  # 500: about one box per chunk
@pytest.mark.parametrize("thresholds, labels, fg_threshold, bg_threshold", MATCHINGS)
def test_coverage_and_positives_equal_brute_force_and_label_anchors(
    datasets, model, pairs_per_chunk, thresholds, labels, fg_threshold, bg_threshold, monkeypatch
):
    if pairs_per_chunk is not None:
        monkeypatch.setattr(anchor_coverage, "PAIRS_PER_CHUNK", pairs_per_chunk)
    opts = []
    if thresholds is not None:
        opts = ["MODEL.RETINANET.IOU_THRESHOLDS", thresholds, "MODEL.RETINANET.IOU_LABELS", labels]
    cfg = small_cfg(*opts)
    if opts:  # label_anchors of a model built with this matcher
        model = build_model(cfg).eval()
    resized = load_resized_boxes(cfg, "analysis_mixed")
    grid = AnchorGrid.from_config(cfg)
    coverage = measure_anchor_coverage(resized, grid, cfg)
    assert (coverage.fg_threshold, coverage.bg_threshold) == (fg_threshold, bg_threshold)
    num_classes = model.num_classes
    brute_best, first = [], 0
    for boxes, size in zip(resized.boxes, resized.image_sizes):
        level_anchors = model_anchors(model, size)
        anchors = torch.cat(level_anchors)
        level = torch.repeat_interleave(torch.arange(len(level_anchors)), torch.tensor([len(a) for a in level_anchors]))
        iou = pairwise_iou(Boxes(boxes), Boxes(anchors))  # every box against every anchor
        ours = slice(first, first + len(boxes))
        first += len(boxes)
        assert torch.equal(coverage.best_iou[ours], iou.max(1).values)
        fg = iou >= fg_threshold
        fg_per_level = torch.stack([(fg & (level == k)).sum(1) for k in range(len(level_anchors))], 1)
        assert torch.equal(coverage.num_fg[ours], fg_per_level)
        brute_best.append(iou.max(1).values)

        instances = Instances(size, gt_boxes=Boxes(boxes), gt_classes=torch.zeros(len(boxes), dtype=torch.int64))
        labels, matched_boxes = model.label_anchors(anchors, [instances])
        foreground = (labels[0] >= 0) & (labels[0] != num_classes)
        for g, box in enumerate(boxes):
            assigned = foreground & (matched_boxes[0] == box).all(1)
            expected = torch.bincount(level[assigned], minlength=len(level_anchors))
            assert torch.equal(coverage.num_positive[ours][g], expected), g
    brute_best = torch.cat(brute_best)
    summary = coverage.summary()
    assert summary["all"]["num_covered"] == int((brute_best >= fg_threshold).sum())
    assert 0 < summary["all"]["num_covered"] < len(brute_best)  # the data has both kinds
    assert summary["boxes_with_low_quality_positives_only"] > 0

    grid_sizes = torch.cat([torch.tensor(grid.feature_sizes(s)).expand(len(b), -1, -1)
                            for b, s in zip(resized.boxes, resized.image_sizes)])
    closed_form = best_iou_on_grid(coverage.boxes, grid_sizes, grid.strides, grid.offset, grid.level_cell_anchors)
    assert torch.allclose(closed_form, brute_best.double(), atol=1e-5)


def test_suggestion_raises_coverage_of_tiny_elongated_boxes(datasets, tmp_path):
    cfg = small_cfg()
    report = analyze_anchor_coverage(cfg, "analysis_elongated")
    before = report.current.summary()["all"]["coverage"]
    after = report.suggested.summary()["all"]["coverage"]
    assert before < 0.5 and after > 0.9, (before, after)
    assert report.suggested.num_positive.sum(1).min() > 0
    assert report.search["predicted_coverage_after"] == after

    # The printed YAML, merged into the config, reproduces the reported coverage ...
    text = format_anchor_coverage_report(report)
    yaml_text = text.split("Paste into the config (YAML):\n\n")[1].split("\n\n")[0]
    yaml_path = tmp_path / "anchors.yaml"
    yaml_path.write_text(yaml_text + "\n")
    merged = small_cfg()
    merged.merge_from_file(str(yaml_path))
    assert AnchorSetting.from_config(merged) == report.suggestion
    resized = load_resized_boxes(merged, "analysis_elongated")
    again = measure_anchor_coverage(resized, AnchorGrid.from_config(merged), merged)
    assert again.summary()["all"]["coverage"] == after
    # ... and so does the printed command line.
    command_line = text.split("or append to the command line:\n\n")[1].splitlines()[0]
    from_opts = small_cfg(*shlex.split(command_line))
    assert AnchorSetting.from_config(from_opts) == report.suggestion
    assert report.suggestion.config_opts()[::2] == ANCHOR_KEYS
    assert all(len(sizes) == 3 for sizes in report.suggestion.sizes)  # 3 sizes x 3 ratios per location, as before

    # The suggested keys are Detectron2's: they load into another config and build its model,
    # with either generator and with Detectron2's own RetinaNet, whose anchors are the suggested ones.
    for extra in ([], ["MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator"],
                  ["MODEL.META_ARCHITECTURE", "RetinaNet", "MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator"]):
        other = load_config(SHAPES_CONFIG, report.suggestion.config_opts() + extra)
        assert AnchorSetting.from_config(other) == report.suggestion
        built = build_model(other)
        assert built.anchor_generator.num_cell_anchors == [9] * 5
        for ours, theirs in zip(report.suggestion.level_cell_anchors(), built.anchor_generator.cell_anchors):
            assert torch.equal(ours, theirs)

    # Deterministic: the same boxes give the same setting.
    grid = AnchorGrid.from_config(cfg)
    grid_sizes = torch.tensor(grid.feature_sizes((256, 256))).expand(len(report.current.boxes), -1, -1)
    setting, _ = suggest_anchor_setting(report.current.boxes, grid_sizes, grid.strides, grid.offset,
                                        AnchorSetting.from_config(cfg), 0.5)
    assert setting == report.suggestion


def test_default_anchor_generator_gives_the_same_report(datasets):
    ours = analyze_anchor_coverage(small_cfg(), "analysis_elongated").to_dict()
    default = analyze_anchor_coverage(small_cfg("MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator"),
                                      "analysis_elongated").to_dict()
    for data in (ours, default):
        data["search"].pop("search_seconds")
        for summary in (data["current"], data["suggested"]):
            summary["anchors"].pop("generator")
    assert default == ours


def test_iou_labels_without_foreground_fail_naming_the_key(datasets):
    cfg = small_cfg("MODEL.RETINANET.IOU_LABELS", "[0, -1, 0]")
    with pytest.raises(AnchorCoverageError, match=r"^cfg\.MODEL\.RETINANET\.IOU_LABELS = \[0, -1, 0\]: [^\n]*$"):
        analyze_anchor_coverage(cfg, "analysis_exact")


def load_tool():
    path = os.path.join(REPO_ROOT, "tools", "analyze_anchors.py")
    spec = importlib.util.spec_from_file_location("analyze_anchors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_png_and_json(datasets, tmp_path):
    json_path, image_dir = datasets["elongated"]
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join("tools", "analyze_anchors.py"), "--config-file", BASE_CONFIG,
         "--json", json_path, "--image-root", image_dir, "--max-images", "20", "--output", str(out),
         "--opts", *SMALL_OPTS],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr
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


def test_tool_errors_name_the_missing_thing(datasets, tmp_path):
    tool = load_tool()
    cases = [
        (["--dataset", "no_such_dataset"], "'no_such_dataset' is not registered"),
        (["--json", str(tmp_path / "missing.json"), "--image-root", str(tmp_path)],
         f"{tmp_path / 'missing.json'}: file not found"),
        (["--dataset", "analysis_exact", "--opts", "MODEL.NO_SUCH_KEY", "1"], "MODEL.NO_SUCH_KEY"),
        (["--dataset", "analysis_exact", "--opts", "MODEL.RETINA_PLUGIN.FG_IOU_THRESHOLD", "0.6"],
         "MODEL.RETINA_PLUGIN.FG_IOU_THRESHOLD was renamed to MODEL.RETINANET.IOU_THRESHOLDS"),
        (["--dataset", "analysis_exact", "--opts", "MODEL.RETINANET.IOU_LABELS", "[0, -1, 0]"],
         "MODEL.RETINANET.IOU_LABELS = [0, -1, 0]: no IoU interval is labelled 1"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool.main(["--config-file", BASE_CONFIG, *args])
        assert message in str(exit_info.value.code)
        assert "\n" not in str(exit_info.value.code)  # one line
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", str(tmp_path / "none.yaml")])
    assert f"config file not found: {tmp_path / 'none.yaml'}" in str(exit_info.value.code)
