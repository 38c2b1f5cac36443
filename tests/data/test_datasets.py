"""Tests of retina_plugin.data: the embedded shapes dataset and checked COCO json registration."""
import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from retina_plugin.data import (
    SHAPES_CLASSES,
    generate_shapes_dataset,
    register_coco_json,
    register_shapes_dataset,
)

SMALL = dict(num_train=12, num_val=5, image_size=256, seed=3)


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(root, **SMALL)
    return root


def test_generation_is_deterministic(shapes_root, tmp_path):
    info = generate_shapes_dataset(tmp_path / "again", **SMALL)
    assert info["generated"] and info["splits"]["train"]["num_images"] == SMALL["num_train"]
    for split in ("train", "val"):
        name = f"annotations/instances_{split}.json"
        assert (shapes_root / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    for rel in ("train/000000.png", "train/000007.png", "val/000004.png"):
        assert (shapes_root / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()
    other = generate_shapes_dataset(tmp_path / "other", **dict(SMALL, seed=4))
    assert other["generated"]
    assert (tmp_path / "other/train/000000.png").read_bytes() != (
        shapes_root / "train/000000.png"
    ).read_bytes()


def test_second_call_is_a_noop_and_new_params_regenerate(tmp_path):
    first = generate_shapes_dataset(tmp_path, **SMALL)
    manifest = (tmp_path / "manifest.json").read_bytes()
    image = tmp_path / "train" / "000003.png"
    mtime = image.stat().st_mtime_ns
    second = generate_shapes_dataset(tmp_path, **SMALL)
    assert first["generated"] and not second["generated"]
    assert (tmp_path / "manifest.json").read_bytes() == manifest
    assert image.stat().st_mtime_ns == mtime

    third = generate_shapes_dataset(tmp_path, **dict(SMALL, num_train=4))
    assert third["generated"]
    assert sorted(os.listdir(tmp_path / "train")) == [f"{i:06d}.png" for i in range(4)]
    assert len(_load(tmp_path / "annotations/instances_train.json")["images"]) == 4


def test_killed_run_leaves_no_manifest(tmp_path, monkeypatch):
    import retina_plugin.data.shapes as shapes

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    generate_shapes_dataset(tmp_path, **SMALL)
    monkeypatch.setattr(shapes, "_write_split", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_dataset(tmp_path, **dict(SMALL, seed=5))
    assert not (tmp_path / "manifest.json").exists()
    monkeypatch.undo()
    assert generate_shapes_dataset(tmp_path, **SMALL)["generated"]


def test_annotations_are_valid_and_boxes_tight(shapes_root):
    coco = _load(shapes_root / "annotations/instances_train.json")
    assert [c["name"] for c in coco["categories"]] == list(SHAPES_CLASSES)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert min(a["id"] for a in coco["annotations"]) >= 1
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert set(by_image) == {img["id"] for img in coco["images"]}  # every image has objects
    assert all(1 <= len(v) <= 6 for v in by_image.values())

    checked = 0
    for img in coco["images"]:
        image = cv2.imread(str(shapes_root / "train" / img["file_name"])).astype(np.int64)
        assert image.shape == (img["height"], img["width"], 3)
        anns = by_image[img["id"]]
        outside = np.ones(image.shape[:2], bool)
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
            assert 0 < ann["area"] <= w * h
            outside[y : y + h, x : x + w] = False
        background = np.median(image[outside], axis=0)
        foreground = np.abs(image - background).max(axis=2) > 40
        assert foreground[outside].mean() < 0.001
        for ann in anns:
            x, y, w, h = ann["bbox"]
            # Only boxes with a 3 px margin free of other boxes: there the extent of the
            # non-background pixels must be the box itself.
            x0, y0 = max(x - 3, 0), max(y - 3, 0)
            x1, y1 = min(x + w + 3, img["width"]), min(y + h + 3, img["height"])
            if any(
                o is not ann
                and o["bbox"][0] < x1 and x0 < o["bbox"][0] + o["bbox"][2]
                and o["bbox"][1] < y1 and y0 < o["bbox"][1] + o["bbox"][3]
                for o in anns
            ):
                continue
            crop = foreground[y0:y1, x0:x1]
            cols, rows = np.flatnonzero(crop.any(0)), np.flatnonzero(crop.any(1))
            extent = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
            assert np.allclose(extent, (x, y, x + w, y + h), atol=1), (img, ann, extent)
            assert abs(crop.sum() - ann["area"]) <= 0.05 * ann["area"]
            checked += 1
    assert checked >= 20


@pytest.fixture
def clean_catalog():
    """Take shapes_train / shapes_val out of the catalogs during a test, then put them back."""
    names = ("shapes_train", "shapes_val")
    saved = {n: (DatasetCatalog.pop(n, None), MetadataCatalog.pop(n, None)) for n in names}
    yield
    for name, (func, meta) in saved.items():
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
        if func is not None:
            DatasetCatalog[name] = func
        if meta is not None:
            MetadataCatalog[name] = meta


def test_register_shapes_dataset(shapes_root, clean_catalog):
    root = register_shapes_dataset(shapes_root, **SMALL)
    assert root == os.path.abspath(shapes_root)
    assert register_shapes_dataset(shapes_root, **SMALL) == root  # twice is fine
    for split, n in (("train", SMALL["num_train"]), ("val", SMALL["num_val"])):
        name = f"shapes_{split}"
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(SHAPES_CLASSES)
        assert meta.evaluator_type == "coco"
        assert meta.json_file == os.path.join(root, "annotations", f"instances_{split}.json")
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == n
        assert all(os.path.isfile(d["file_name"]) for d in dicts)
        anns = [a for d in dicts for a in d["annotations"]]
        assert anns and all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in anns)
        assert {a["category_id"] for a in anns} <= {0, 1, 2}
        assert MetadataCatalog.get(name).thing_classes == list(SHAPES_CLASSES)


def test_default_root_from_environment(tmp_path, monkeypatch):
    from retina_plugin.data import default_shapes_root

    monkeypatch.delenv("RETINA_PLUGIN_DATASETS", raising=False)
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    assert default_shapes_root() == os.path.join("datasets", "retina_shapes")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert default_shapes_root() == os.path.join(str(tmp_path), "retina_shapes")
    monkeypatch.setenv("RETINA_PLUGIN_DATASETS", str(tmp_path / "mine"))
    assert default_shapes_root() == str(tmp_path / "mine")


def _write_coco(path, images=None, annotations=None, categories=None, drop=()):
    data = {
        "images": images
        if images is not None
        else [{"id": 10, "file_name": "a.png", "height": 50, "width": 60},
              {"id": 11, "file_name": "b.png", "height": 50, "width": 60}],
        "annotations": annotations
        if annotations is not None
        else [{"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 20], "iscrowd": 0,
               "area": 200},
              {"id": 2, "image_id": 11, "category_id": 3, "bbox": [5.5, 6, 7, 8], "iscrowd": 0,
               "area": 56}],
        "categories": categories
        if categories is not None
        else [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    for key in drop:
        del data[key]
    path.write_text(json.dumps(data))
    return path


def test_register_coco_json_maps_category_ids(tmp_path):
    name = f"user_coco_{tmp_path.name}"
    json_file = _write_coco(tmp_path / "ok.json")
    meta = register_coco_json(name, json_file, tmp_path)
    assert meta.evaluator_type == "coco"
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [10, 11]
    assert dicts[0]["file_name"] == os.path.join(str(tmp_path), "a.png")
    assert [a["category_id"] for d in dicts for a in d["annotations"]] == [1, 0]
    assert MetadataCatalog.get(name).thing_classes == ["cat", "dog"]
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}

    # Registering the name again (here for another file) replaces it.
    other = _write_coco(tmp_path / "other.json", categories=[{"id": 3, "name": "cat"},
                                                             {"id": 7, "name": "cow"}])
    register_coco_json(name, other, tmp_path)
    assert len(DatasetCatalog.get(name)) == 2
    assert MetadataCatalog.get(name).thing_classes == ["cat", "cow"]
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize(
    "kind, kwargs, words",
    [
        ("missing_images", dict(drop=("images",)), "'images'"),
        ("missing_categories", dict(drop=("categories",)), "'categories'"),
        ("image_without_file_name", dict(images=[{"id": 10, "height": 5, "width": 5}]),
         "file_name"),
        ("bbox_3_numbers", dict(annotations=[{"id": 1, "image_id": 10, "category_id": 7,
                                              "bbox": [1, 2, 3]}]), "bbox"),
        ("bbox_strings", dict(annotations=[{"id": 1, "image_id": 10, "category_id": 7,
                                            "bbox": ["1", 2, 3, 4]}]), "bbox"),
        ("unknown_category", dict(annotations=[{"id": 1, "image_id": 10, "category_id": 5,
                                                "bbox": [1, 2, 3, 4]}]), "category_id 5"),
        ("unknown_image", dict(annotations=[{"id": 1, "image_id": 99, "category_id": 7,
                                             "bbox": [1, 2, 3, 4]}]), "image_id 99"),
    ],
)
def test_register_coco_json_rejects_malformed(tmp_path, kind, kwargs, words):
    json_file = _write_coco(tmp_path / f"{kind}.json", **kwargs)
    name = f"bad_{tmp_path.name}"
    with pytest.raises(ValueError) as e:
        register_coco_json(name, json_file, tmp_path)
    assert str(json_file) in str(e.value) and words in str(e.value)
    assert name not in DatasetCatalog.list()


def test_register_coco_json_rejects_missing_or_broken_file(tmp_path):
    with pytest.raises(ValueError, match="not found") as e:
        register_coco_json(f"missing_{tmp_path.name}", tmp_path / "nope.json", tmp_path)
    assert str(tmp_path / "nope.json") in str(e.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match="json") as e:
        register_coco_json(f"broken_{tmp_path.name}", broken, tmp_path)
    assert str(broken) in str(e.value)
