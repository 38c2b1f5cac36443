"""
Test-time augmentation (retina_plugin/inference/tta.py): with the flip only, a model that is
symmetric under a horizontal flip gives its plain result; boxes of the flipped and resized
versions of the tiny trained detector land back where its plain ones are; weighted box fusion
on hand-built boxes; the config checks; and, end to end, train_net.py --eval-only with
TEST.AUG.ENABLED (plain and TTA AP, inference_TTA/), tiled TTA and the demo's --tta.
"""
import json
import re

import pytest
import torch
from torch import nn
from detectron2.layers import batched_nms
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, pairwise_iou

from retina_plugin import load_config
from retina_plugin.compare import compare_detections
from retina_plugin.config import ConfigError
from retina_plugin.data.shapes import generate_shapes_dataset
from retina_plugin.inference.predictor import TiledPredictor
from retina_plugin.inference.tta import RetinaNetWithTTA, check_tta_config, weighted_box_fusion
from flip_symmetry import HEIGHT, WIDTH, symmetric_cfg, symmetric_model
from tiny_detector import OBJECT_SIZES, load_shapes_split
from tool_runs import BASE_CONFIG, run_tool

@pytest.mark.parametrize("merge", ["nms", "wbf"])
def test_flip_tta_of_a_symmetric_model_is_the_plain_result(merge, single_thread):
    cfg = symmetric_cfg(merge)
    model = symmetric_model(cfg)
    image = (torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    tta = RetinaNetWithTTA(cfg, model)
    with torch.no_grad():
        plain = model([{"image": image}])[0]["instances"]
        (output,) = tta([{"image": image}])
        versions, transforms = tta.versions({"image": image, "height": HEIGHT, "width": WIDTH})
        (own, flipped) = tta.candidates(versions, transforms)

    assert len(versions) == 2 and versions[1]["image"].equal(image.flip(-1))  # MIN_SIZES = the size: no resize
    # The flipped version's candidates, mapped back, are the image's own.
    assert compare_detections(flipped, own, min_iou=0.999, score_atol=1e-5)["match"]
    if merge == "nms":
        reference = plain  # NMS of [A, A] is NMS of A: each candidate's twin is suppressed by it
    else:  # WBF of [A, A] over 2 versions is WBF of A over 1: the same means
        boxes, scores, classes = weighted_box_fusion(*own, torch.zeros_like(own[2]), 1, cfg.MODEL.RETINANET.NMS_THRESH_TEST, 100)
        reference = detector_postprocess(Instances((HEIGHT, WIDTH), pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes), HEIGHT, WIDTH)
    comparison = compare_detections(output["instances"], reference, min_iou=0.999, score_atol=1e-5)
    assert comparison["match"], comparison
    assert comparison["matched"] >= 95 and len(plain) == 100


def test_weighted_box_fusion_of_hand_built_boxes():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # version 0, 0.9: a cluster's seed
            [1.0, 0.0, 11.0, 10.0],  # version 1, 0.6: IoU 0.82 with the seed
            [0.0, 1.0, 10.0, 11.0],  # version 0, 0.3: IoU 0.82; version 0's best stays 0.9
            [0.0, 0.0, 10.0, 10.0],  # version 1, 0.7, class 1: a cluster of its own class
            [50.0, 50.0, 60.0, 60.0],  # version 0, 0.8: alone
            [5.0, 0.0, 15.0, 10.0],  # version 1, 0.5: IoU 0.33 with the seed, below 0.5: its own cluster
        ]
    )
    scores = torch.tensor([0.9, 0.6, 0.3, 0.7, 0.8, 0.5])
    classes = torch.tensor([0, 0, 0, 1, 0, 0])
    versions = torch.tensor([0, 1, 0, 1, 0, 1])

    fused, fused_scores, fused_classes = weighted_box_fusion(boxes, scores, classes, versions, 2, 0.5, 100)

    # (0 * 0.9 + 1 * 0.6 + 0 * 0.3) / 1.8 = 1/3 ... ; score (0.9 + 0.6) / 2
    third = 1 / 3
    expected = {
        (0, 0.75): [third, 0.3 / 1.8, 10 + third, 10 + 0.3 / 1.8],
        (0, 0.4): [50.0, 50.0, 60.0, 60.0],
        (1, 0.35): [0.0, 0.0, 10.0, 10.0],
        (0, 0.25): [5.0, 0.0, 15.0, 10.0],
    }
    assert fused_scores.tolist() == pytest.approx([0.75, 0.4, 0.35, 0.25])
    for box, score, cls in zip(fused, fused_scores.tolist(), fused_classes.tolist()):
        assert box.tolist() == pytest.approx(expected[(cls, round(score, 2))], abs=1e-5)
    # the cap keeps the best
    _, top, _ = weighted_box_fusion(boxes, scores, classes, versions, 2, 0.5, 2)
    assert top.tolist() == pytest.approx([0.75, 0.4])
    empty = weighted_box_fusion(boxes[:0], scores[:0], classes[:0], versions[:0], 2, 0.5, 100)
    assert all(len(x) == 0 for x in empty)


def test_tta_config_is_checked(small_cfg):
    with pytest.raises(ConfigError, match="MODEL.RETINA_PLUGIN.TTA_MERGE"):
        load_config(BASE_CONFIG, ["MODEL.RETINA_PLUGIN.TTA_MERGE", "mean"])
    for key, value in [("MIN_SIZES", ()), ("MIN_SIZES", 256), ("MIN_SIZES", (0, 256)), ("MAX_SIZE", 100), ("FLIP", 1)]:
        cfg = small_cfg.clone()
        cfg.TEST.AUG.MIN_SIZES = (200, 300)
        cfg.TEST.AUG[key] = value
        with pytest.raises(ValueError, match=f"TEST.AUG.{key}"):
            check_tta_config(cfg)
    with pytest.raises(TypeError, match="raw candidates"):
        RetinaNetWithTTA(small_cfg, nn.Conv2d(3, 3, 1))


# ------------------------------------------------------------------ the tiny trained detector

TINY_TTA = ["TEST.AUG.MIN_SIZES", (128, 160), "TEST.AUG.MAX_SIZE", 320, "TEST.AUG.FLIP", True]


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    """20 unseen 128x128 images of 10-20 px shapes, as a COCO json with the one class "shape"."""
    root = tmp_path_factory.mktemp("tta_val")
    generate_shapes_dataset(
        root, num_train=0, num_val=20, image_size=128, seed=7,
        min_object_size=OBJECT_SIZES[0], max_object_size=OBJECT_SIZES[1], max_objects=10,
    )  # fmt: skip
    samples = load_shapes_split(root, "val")
    return str(root / "annotations" / "shape_val.json"), str(root / "val"), samples


def tiny_tta_cfg(trained, *opts):
    cfg = trained.cfg.clone()
    cfg.merge_from_list(["TEST.AUG.ENABLED", True, *TINY_TTA, *opts])
    return cfg


def test_versions_mapped_back_land_on_the_plain_detections(trained, val_split, single_thread):
    tta = RetinaNetWithTTA(tiny_tta_cfg(trained), trained.model)
    nms = trained.cfg.MODEL.RETINANET.NMS_THRESH_TEST
    names = ["128", "128 flipped", "160", "160 flipped"]
    ious = {name: [] for name in names}
    unmapped = []  # the flipped version's boxes without mapping back, as a control
    for image, _, _ in val_split[2][:5]:
        image = torch.from_numpy(image).permute(2, 0, 1)
        with torch.no_grad():
            plain = trained.model([{"image": image.float()}])[0]["instances"]
            versions, transforms = tta.versions({"image": image, "height": 128, "width": 128})
            candidates = tta.candidates(versions, transforms)
        assert [tuple(v["image"].shape[1:]) for v in versions] == [(128, 128), (128, 128), (160, 160), (160, 160)]
        confident = plain[plain.scores > 0.3].pred_boxes
        for name, (boxes, scores, classes), version in zip(names, candidates, versions):
            keep = batched_nms(boxes, scores, classes, nms)
            keep = keep[scores[keep] > 0.2]
            # each confident plain box: its best match among this version's boxes, mapped back
            ious[name].append(pairwise_iou(confident, Boxes(boxes[keep])).max(1).values)
        raw = trained.model([{"image": versions[1]["image"].float()}])[0]["instances"]
        unmapped.append(pairwise_iou(confident, raw[raw.scores > 0.2].pred_boxes).max(1).values)
    ious = {name: torch.cat(v) for name, v in ious.items()}
    unmapped = torch.cat(unmapped)
    print("\nIoU of each confident plain box with its best match, median / share >= 0.5: " + ", ".join(
        f"{name} {v.median():.2f} / {(v >= 0.5).float().mean():.2f}" for name, v in ious.items()
    ) + f"; the flipped version not mapped back {unmapped.median():.2f} / {(unmapped >= 0.5).float().mean():.2f}")
    assert len(ious["128"]) >= 10
    assert ious["128"].min() > 0.999  # the version at the image's own size is the image
    for name in names[1:]:  # objects of 10-20 px: a pixel or two apart is an IoU of 0.7-0.8
        assert ious[name].median() >= 0.65 and (ious[name] >= 0.5).float().mean() >= 0.8, name
    assert (unmapped >= 0.5).float().mean() <= 0.3


def test_train_net_eval_only_with_tta_reports_both_aps(trained, val_split, tmp_path):
    test_json, test_images, _ = val_split
    result = run_tool(
        "tools/train_net.py", "--config-file", trained.config_file, "--eval-only",
        "--test-json", test_json, "--test-images", test_images,
        "MODEL.WEIGHTS", trained.weights, "OUTPUT_DIR", str(tmp_path), "TEST.AUG.ENABLED", "True",
        *(str(x) for x in TINY_TTA),
    )  # fmt: skip
    log = result.stdout + result.stderr
    plain_ap, tta_ap = (float(x) for x in re.findall(r"copypaste: ([\d.]+),", log)[-2:])
    print(f"\nbbox AP on 20 val images: plain {plain_ap:.2f}, TTA (short side 128, 160, flipped) {tta_ap:.2f}")
    assert "test-time augmentation: 4 versions per image" in log
    dataset = "user_test_shape_val"
    for folder in ("inference", "inference_TTA"):
        detections = json.loads((tmp_path / folder / dataset / "coco_instances_results.json").read_text())
        assert len(detections) > 0
    assert plain_ap > 25 and tta_ap > plain_ap  # its objects are small: the larger version helps


def test_tiled_prediction_runs_tta_on_every_tile(trained, tmp_path, single_thread):
    generate_shapes_dataset(
        tmp_path, num_train=0, num_val=1, image_size=256, seed=5,
        min_object_size=OBJECT_SIZES[0], max_object_size=OBJECT_SIZES[1], max_objects=30,
    )  # fmt: skip
    ((image, gt_boxes, _),) = load_shapes_split(tmp_path, "val")
    cfg = tiny_tta_cfg(trained, "MODEL.RETINA_PLUGIN.TILE_SIZE", 128, "MODEL.RETINA_PLUGIN.TILE_OVERLAP", 0.25)
    predictor = TiledPredictor(cfg)
    assert isinstance(predictor.tiled.model, RetinaNetWithTTA)
    calls = []
    predictor.model.register_forward_pre_hook(lambda m, inputs: calls.append([tuple(x["image"].shape) for x in inputs[0]]))
    instances = predictor(image)["instances"]

    # 9 tiles of 128 (stride 96), each in 2 sizes, its two versions of a size in one batch
    assert len(calls) == 18 and all(len(c) == 2 for c in calls)
    assert {c[0][1:] for c in calls} == {(128, 128), (160, 160)}
    found = pairwise_iou(Boxes(gt_boxes), instances[instances.scores > 0.5].pred_boxes).max(1).values >= 0.5
    print(f"\ntiled TTA found {int(found.sum())} of {len(gt_boxes)} shapes")
    assert found.float().mean() >= 0.8


def test_demo_with_tta(trained, val_split, tmp_path):
    _, test_images, _ = val_split
    result = run_tool(
        "tools/demo.py", "--config-file", trained.config_file, "--input", f"{test_images}/000000.png",
        "--output", str(tmp_path), "--tta", "--opts", "MODEL.WEIGHTS", trained.weights, *(str(x) for x in TINY_TTA),
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert "test-time augmentation: 4 versions per image" in log
    assert int(re.search(r"detected (\d+) instances", log).group(1)) >= 3
    assert (tmp_path / "000000.png").stat().st_size > 0
