"""
Images checked when a dataset is registered and loaded, from their headers: a size that is not
the json's, an image the resize shrinks to 0 px, named before the run or skipped and counted
with DATALOADER.SKIP_UNREADABLE_IMAGES; the sizes cached beside the images.
"""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image
from detectron2.data import DatasetCatalog, MetadataCatalog

from retina_plugin.data import register_coco_json
from retina_plugin.data.coco_json import DatasetError
from retina_plugin.data.image_sizes import CACHE_NAME, image_sizes
from retina_plugin.data.loader import build_resumable_train_loader
from retina_plugin.data.mapper import RetinaDatasetMapper, read_image


def _write_json(tmp_path, name, entries):
    """A COCO json of `entries` (file name -> (width, height) the json claims), one box each."""
    images = [{"id": i + 1, "file_name": f, "width": w, "height": h} for i, (f, (w, h)) in enumerate(entries.items())]
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [0, 0, 4, 4], "iscrowd": 0, "area": 16}
                   for i in range(len(images))]  # fmt: skip
    json_file = tmp_path / f"{name}.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return json_file


def _rgb(w, h):
    return Image.fromarray(np.full((h, w, 3), 90, np.uint8))


@pytest.fixture
def names(request, tmp_path):
    """Dataset names unique to the test, unregistered after it."""
    made = []

    def make(suffix):
        made.append(f"chk_{request.node.name}_{suffix}")
        return made[-1]

    yield make
    for name in made:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_registration_names_an_image_whose_size_is_not_the_jsons(tmp_path, names):
    _rgb(40, 30).save(tmp_path / "a.png")
    _rgb(64, 48).save(tmp_path / "b.png")
    json_file = _write_json(tmp_path, "wrong", {"a.png": (40, 30), "b.png": (48, 64)})
    with pytest.raises(DatasetError) as e:
        register_coco_json(names("wrong"), json_file, tmp_path)
    message = str(e.value)
    assert str(tmp_path / "b.png") in message and "64x48 (width x height)" in message and "48x64" in message
    assert str(json_file) in message and "1 of 2 images" in message and "\n" not in message


def test_exif_rotated_jpeg_counts_as_detectron2_reads_it(tmp_path, names):
    """A JPEG stored 40x30 with EXIF orientation 6 (rotate 90) is read 30x40; the json must say that."""
    exif = Image.Exif()
    exif[274] = 6
    _rgb(40, 30).save(tmp_path / "r.jpg", exif=exif)
    assert read_image(str(tmp_path / "r.jpg"), "BGR").shape[:2] == (40, 30)  # (height, width): 30 wide
    register_coco_json(names("upright"), _write_json(tmp_path, "upright", {"r.jpg": (30, 40)}), tmp_path)
    with pytest.raises(DatasetError, match=r"is 30x40 \(width x height\) but 40x30"):
        register_coco_json(names("stored"), _write_json(tmp_path, "stored", {"r.jpg": (40, 30)}), tmp_path)


def _train_cfg(cfg, train, test=()):
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), tuple(test)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 128
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 128
    cfg.SEED = 3
    return cfg


def test_an_image_resized_to_0_px_is_named_before_training(tmp_path, names, small_cfg):
    """20000x20 with MIN_SIZE 64 / MAX_SIZE 128 resizes to 128x0 px: PIL's resize would fail mid-run."""
    _rgb(40, 30).save(tmp_path / "a.png")
    _rgb(20000, 20).save(tmp_path / "strip.png")
    train = names("train")
    register_coco_json(train, _write_json(tmp_path, "train", {"a.png": (40, 30), "strip.png": (20000, 20)}), tmp_path)
    cfg = _train_cfg(small_cfg, train)
    with pytest.raises(DatasetError) as e:
        build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))
    assert str(tmp_path / "strip.png") in str(e.value) and "128x0 px" in str(e.value) and repr(train) in str(e.value)

    # An evaluation set with such an image stops the run before training, not after it.
    test = names("test")
    register_coco_json(test, _write_json(tmp_path, "test", {"strip.png": (20000, 20)}), tmp_path)
    cfg = _train_cfg(small_cfg, names("train_ok"), [test])
    register_coco_json(cfg.DATASETS.TRAIN[0], _write_json(tmp_path, "ok", {"a.png": (40, 30)}), tmp_path)
    with pytest.raises(DatasetError, match=f"dataset '{test}'.*strip.png"):
        build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))


def test_skip_unreadable_images_skips_and_counts_every_kind_in_one_line(tmp_path, names, small_cfg, caplog):
    for name, (w, h) in {"a.png": (40, 30), "b.png": (50, 40), "wrong.png": (40, 30), "strip.png": (20000, 20)}.items():
        _rgb(w, h).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    train = names("train")
    json_file = _write_json(tmp_path, "train", {"a.png": (40, 30), "b.png": (50, 40), "wrong.png": (30, 40),
                                                "strip.png": (20000, 20), "broken.png": (40, 30), "gone.png": (40, 30)})
    with caplog.at_level(logging.WARNING):
        register_coco_json(train, json_file, tmp_path, skip_bad_images=True)
    assert "wrong.png" in caplog.text and "the training loader skips them" in caplog.text
    caplog.clear()

    cfg = _train_cfg(small_cfg, train)
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = True
    with caplog.at_level(logging.WARNING):
        loader = build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))
        batches = [b for _, b in zip(range(3), loader)]
    assert sorted(os.path.basename(d["file_name"]) for d in loader.dataset) == ["a.png", "b.png"]
    assert {os.path.basename(d["file_name"]) for b in batches for d in b} == {"a.png", "b.png"}
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1, skipped
    assert (f"dataset '{train}': 4 of 6 images: 1 of another size than the json says, 1 resized to 0 px, 1 unreadable, "
            "1 missing") in skipped[0]


def test_sizes_are_cached_beside_the_images_by_size_and_mtime(tmp_path):
    _rgb(40, 30).save(tmp_path / "a.png")
    path = str(tmp_path / "a.png")
    assert image_sizes([path]) == {path: (40, 30)}
    cache = json.loads((tmp_path / CACHE_NAME).read_text())
    stat = os.stat(path)
    assert cache == {"a.png": [stat.st_size, stat.st_mtime_ns, 40, 30]}

    # A cached entry with the file's size and mtime is believed: the file is not opened again.
    (tmp_path / CACHE_NAME).write_text(json.dumps({"a.png": [stat.st_size, stat.st_mtime_ns, 7, 9]}))
    assert image_sizes([path]) == {path: (7, 9)}
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed file is read again
    assert image_sizes([path]) == {path: (40, 30)}

    # A folder where the cache cannot be written still gets its sizes.
    unwritable = tmp_path / "sub"
    (unwritable / CACHE_NAME).mkdir(parents=True)
    _rgb(20, 10).save(unwritable / "b.png")
    assert image_sizes([str(unwritable / "b.png")]) == {str(unwritable / "b.png"): (20, 10)}


def test_train_net_with_skipping_trains_past_an_image_of_another_size(tmp_path):
    """The --train-json route: registration honours DATALOADER.SKIP_UNREADABLE_IMAGES of the config."""
    from tool_runs import CONFIG, QUICK_OPTS, run_tool

    for name in ("a.png", "b.png", "c.png"):
        _rgb(64, 48).save(tmp_path / name)
    json_file = _write_json(tmp_path, "train", {"a.png": (64, 48), "b.png": (64, 48), "c.png": (48, 64)})
    common = ["--config-file", str(CONFIG), "--train-json", str(json_file), "--train-images", str(tmp_path),
              *QUICK_OPTS, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "out")]  # fmt: skip
    refused = run_tool("tools/train_net.py", *common, check=False)
    assert refused.returncode == 2 and "train_net: error: " in refused.stderr
    assert str(tmp_path / "c.png") in refused.stderr and "48x64" in refused.stderr
    trained = run_tool("tools/train_net.py", *common, "DATALOADER.SKIP_UNREADABLE_IMAGES", "True")
    assert "1 of 3 images: 1 of another size than the json says" in trained.stdout + trained.stderr
    assert (tmp_path / "out" / "model_final.pth").is_file()
