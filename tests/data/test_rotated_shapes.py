"""
The embedded rotated dataset: deterministic files, rotated boxes that hold the drawn pixels
tightly, cars parked side by side where horizontal boxes overlap, registered by name.
"""
import json
import math
from itertools import combinations

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from retina_plugin.data import ROTATED_SHAPES_CLASSES, generate_rotated_shapes_dataset, register_rotated_shapes_dataset
from retina_plugin.data.rotated_boxes import xywha_contains
from retina_plugin.data.rotated_shapes import make_rotated_shapes_image


def _enclosing(box):
    return BoxMode.convert(list(box), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def images():
    return [make_rotated_shapes_image(np.random.default_rng([11, 0, i]), 256) for i in range(30)]


def test_every_box_holds_its_objects_pixels_tightly(images):
    ratios = []
    for image, objects in images:
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        for cls_idx, box, mask in objects:
            ys, xs = np.nonzero(mask)
            inside = xywha_contains(box, np.stack([xs + 0.5, ys + 0.5], axis=1))
            assert inside.mean() >= 0.95, box
            ratios.append(box[2] * box[3] / mask.sum())
            assert box[2] >= box[3] and -90 <= box[4] < 90  # le90
    assert max(ratios) <= 1.3 and len(ratios) >= 60


def test_objects_stand_out_from_the_background_and_touch_nothing(images):
    for image, objects in images:
        masks = [m for _, _, m in objects]
        if not masks:
            continue
        assert not any((a & b).any() for a, b in combinations(masks, 2))
        background = ~np.any(masks, axis=0)
        for mask in masks:  # some channel differs from the background's mean by >= 40 on average
            assert np.abs(image[mask].mean(0) - image[background].mean(0)).max() >= 40


def test_both_classes_turned_and_side_by_side(images):
    """
    Neighbours in a row share their angle. Some moored ships' enclosing horizontal boxes overlap by
    IoU > 0.5, Detectron2's MODEL.RETINANET.NMS_THRESH_TEST: horizontal NMS keeps one of the two.
    """
    objects = [o for _, image_objects in images for o in image_objects]
    counts = np.bincount([c for c, _, _ in objects], minlength=len(ROTATED_SHAPES_CLASSES))
    assert counts.min() >= 50
    angles = np.array([b[4] for _, b, _ in objects])
    assert np.histogram(angles, bins=6, range=(-90, 90))[0].min() >= 15  # all angles, not a few
    neighbours = {name: [] for name in ROTATED_SHAPES_CLASSES}
    for _, image_objects in images:
        for (cls_a, a, _), (cls_b, b, _) in combinations(image_objects, 2):
            if cls_a == cls_b and abs(a[4] - b[4]) < 1e-6 and math.dist(a[:2], b[:2]) < 1.6 * a[3] + 6:
                neighbours[ROTATED_SHAPES_CLASSES[cls_a]].append(_iou(_enclosing(a), _enclosing(b)))
    assert len(neighbours["car"]) >= 20 and len(neighbours["ship"]) >= 20
    assert sum(iou > 0.5 for iou in neighbours["ship"]) >= 3


def test_generation_is_deterministic_and_cached(tmp_path):
    first = generate_rotated_shapes_dataset(tmp_path / "a", num_train=4, num_val=2, image_size=160, seed=5)
    second = generate_rotated_shapes_dataset(tmp_path / "b", num_train=4, num_val=2, image_size=160, seed=5)
    assert first["generated"] and second["generated"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file() and p.name != ".lock")
    assert len(files) == 4 + 2 + 2 + 1
    for path in files:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path
    assert not generate_rotated_shapes_dataset(tmp_path / "a", num_train=4, num_val=2, image_size=160, seed=5)["generated"]
    assert generate_rotated_shapes_dataset(tmp_path / "a", num_train=4, num_val=2, image_size=160, seed=6)["generated"]
    data = json.loads((tmp_path / "a" / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(ROTATED_SHAPES_CLASSES)
    assert data["annotations"] and all(len(a["bbox"]) == 5 for a in data["annotations"])


def test_registered_by_name_with_rotated_boxes(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_PLUGIN_DATASETS", str(tmp_path / "shapes"))
    root = register_rotated_shapes_dataset(num_train=3, num_val=2, image_size=128)
    assert root == str(tmp_path / "shapes" / "rotated")  # the folder `rotated` of the shapes dataset's root
    dicts = DatasetCatalog.get("rotated_shapes_val")
    assert len(dicts) == 2 and dicts[0]["file_name"] == str(tmp_path / "shapes" / "rotated" / "val" / "000000.png")
    annotations = [a for d in dicts for a in d["annotations"]]
    assert annotations and all(a["bbox_mode"] == BoxMode.XYWHA_ABS and len(a["bbox"]) == 5 for a in annotations)
    assert MetadataCatalog.get("rotated_shapes_train").thing_classes == list(ROTATED_SHAPES_CLASSES)
