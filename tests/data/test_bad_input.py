"""
Bad input in datasets ends in a clear message or a correct result: missing and unreadable
images, bad boxes, odd image formats and sizes; real files on disk and Detectron2's loaders.
"""
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from detectron2.data import DatasetCatalog, MetadataCatalog

from retina_plugin.data import register_coco_json
from retina_plugin.data.loader import build_resumable_train_loader, load_dataset_dicts
from retina_plugin.data.mapper import ImageReadError, RetinaDatasetMapper, read_image
from retina_plugin.modeling.meta_arch import RetinaNetPlugin


def _coco_dataset(tmp_path, name, images, annotations=(), categories=({"id": 1, "name": "thing"},)):
    """Write images (file name -> PIL image or raw bytes or None for missing) and register them."""
    entries = []
    for i, (file_name, image) in enumerate(images.items()):
        path = tmp_path / file_name
        if isinstance(image, Image.Image):
            image.save(path)
            w, h = image.size
        else:
            w, h = 40, 30
            if image is not None:
                path.write_bytes(image)
        entries.append({"id": i + 1, "file_name": file_name, "height": h, "width": w})
    json_file = tmp_path / f"{name}.json"
    json_file.write_text(json.dumps({"images": entries, "annotations": list(annotations), "categories": list(categories)}))
    register_coco_json(name, json_file, tmp_path)
    return json_file


@pytest.fixture
def dataset_name(request, tmp_path):
    name = f"rel_{request.node.name}_{tmp_path.name}"
    yield name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _rgb(w=40, h=30, value=128):
    return Image.fromarray(np.full((h, w, 3), value, np.uint8))


def _train_cfg(small_cfg, name, **extra):
    cfg = small_cfg
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 128
    cfg.SEED = 5
    for key, value in extra.items():
        cfg.merge_from_list([key, value])
    return cfg


def test_missing_image_is_named_with_its_dataset_or_skipped(tmp_path, dataset_name, small_cfg, caplog):
    _coco_dataset(tmp_path, dataset_name, {"a.png": _rgb(), "gone.png": None, "b.png": _rgb()})
    with pytest.raises(ImageReadError) as e:
        load_dataset_dicts([dataset_name])
    assert str(tmp_path / "gone.png") in str(e.value) and repr(dataset_name) in str(e.value)
    assert "SKIP_UNREADABLE_IMAGES" in str(e.value)

    with caplog.at_level(logging.WARNING):
        dicts = load_dataset_dicts([dataset_name], skip_bad_images=True)
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["a.png", "b.png"]
    assert "1 of 3 images: 1 missing" in caplog.text and "skipped" in caplog.text


def _truncated_png(w=40, h=30):
    """A PNG whose header reads (40x30) but whose pixels do not: only the mapper finds it out."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def test_unreadable_image_is_named_with_its_dataset_or_skipped(tmp_path, dataset_name, small_cfg, caplog):
    _coco_dataset(tmp_path, dataset_name, {"a.png": _rgb(value=10), "broken.png": _truncated_png(), "b.png": _rgb(value=200)})
    dicts = load_dataset_dicts([dataset_name])
    mapper = RetinaDatasetMapper(_train_cfg(small_cfg, dataset_name), is_train=True)
    with pytest.raises(ImageReadError) as e:
        mapper(dicts[1])
    assert str(tmp_path / "broken.png") in str(e.value) and repr(dataset_name) in str(e.value)

    cfg = _train_cfg(small_cfg, dataset_name, **{"DATALOADER.SKIP_UNREADABLE_IMAGES": True})
    loader = build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))
    with caplog.at_level(logging.WARNING):
        batches = [b for _, b in zip(range(6), loader)]
    files = [os.path.basename(d["file_name"]) for batch in batches for d in batch]
    assert "broken.png" not in files and {"a.png", "b.png"} <= set(files)
    assert "cannot read image" in caplog.text and "broken.png" in caplog.text
    assert "skipped (1 skipped so far" in caplog.text


def test_batches_depend_on_seed_and_iteration_only(tiny_shapes, small_cfg):
    from retina_plugin.data import register_coco_json
    name = f"rel_stream_{tiny_shapes.name}"
    register_coco_json(name, tiny_shapes / "annotations" / "instances_train.json", tiny_shapes / "train")
    cfg = _train_cfg(small_cfg, name)  # horizontal flip on: augmentation is seeded per sample

    def batches(num_workers, start_iter, n):
        cfg.DATALOADER.NUM_WORKERS = num_workers
        loader = build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))
        loader.start_iter = start_iter
        return [[(d["file_name"], d["image"], d["instances"].gt_boxes.tensor) for d in b] for _, b in zip(range(n), loader)]

    def same(a, b):
        return all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                   for p, q in zip(a, b) for x, y in zip(p, q))

    in_process = batches(0, 0, 5)
    assert same(in_process, batches(2, 0, 5))  # loader workers do not change the stream
    assert same(in_process[3:], batches(0, 3, 2))  # a resumed loader continues it
    flips = [torch.equal(b[0][1], b[1][1]) for b in in_process]  # sanity: images differ
    assert not any(flips)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_coco_json_with_unknown_keys_and_sparse_category_ids(tmp_path, dataset_name):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    data = {
        "info": {"year": 2026}, "licenses": [], "my_tool_version": "3.1",
        "images": [{"id": 5, "file_name": "a.png", "height": 30, "width": 40, "flickr_url": "", "gsd_m": 0.3}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 90, "bbox": [1, 2, 3, 4], "iscrowd": 0, "area": 12, "confidence": 0.8},
            {"id": 2, "image_id": 5, "category_id": 17, "bbox": [5, 6, 7, 8], "iscrowd": 0, "area": 56},
        ],
        "categories": [{"id": 90, "name": "ship", "supercategory": "vehicle"}, {"id": 17, "name": "plane"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    register_coco_json(dataset_name, tmp_path / "a.json", tmp_path)
    (d,) = load_dataset_dicts([dataset_name])
    classes = MetadataCatalog.get(dataset_name).thing_classes
    assert [classes[a["category_id"]] for a in d["annotations"]] == ["ship", "plane"]


def test_bad_boxes_in_a_dataset_are_dropped_or_clipped_and_logged(tmp_path, dataset_name, small_cfg, caplog):
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 8], "iscrowd": 0, "area": 80},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 8], "iscrowd": 0, "area": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 5, 3, 8], "iscrowd": 0, "area": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [30, 20, 50, 50], "iscrowd": 0, "area": 2500},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [100, 100, 5, 5], "iscrowd": 0, "area": 25},
    ]
    _coco_dataset(tmp_path, dataset_name, {"a.png": _rgb(), "b.png": _rgb()}, annotations)
    with caplog.at_level(logging.WARNING):
        dicts = load_dataset_dicts([dataset_name])
    assert "1 boxes dropped as non-finite" in caplog.text
    assert "1 boxes dropped as degenerate" in caplog.text
    assert "1 boxes dropped as outside image" in caplog.text
    assert "1 boxes clipped to the image" in caplog.text
    assert [len(d["annotations"]) for d in dicts] == [1, 1]
    assert dicts[1]["annotations"][0]["bbox"] == [30, 20, 40, 30]  # XYXY, clipped to 40x30

    # The model trains on them with finite losses.
    cfg = _train_cfg(small_cfg, dataset_name)
    model = RetinaNetPlugin(cfg).train()
    batch = next(iter(build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))))
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses


def test_a_batch_of_images_without_annotations_trains_as_background(tmp_path, dataset_name, small_cfg, single_thread):
    _coco_dataset(tmp_path, dataset_name, {"a.png": _rgb(), "b.png": _rgb(value=30)})
    cfg = _train_cfg(small_cfg, dataset_name)
    batch = next(iter(build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))))
    assert [len(d["instances"]) for d in batch] == [0, 0]
    model = RetinaNetPlugin(cfg).train()
    losses = model(batch)
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    assert model.head.cls_score.bias.grad.abs().sum() > 0  # pushed towards background


def test_image_formats_are_converted_to_the_model_input(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit grayscale PNG (mode I;16)
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    Image.fromarray(deep.astype(np.uint16)).save(tmp_path / "deep.tif")

    got = read_image(str(tmp_path / "gray.png"), "BGR")
    assert got.shape == (3, 4, 3) and got.dtype == np.uint8
    assert (got == gray[..., None]).all()
    got = read_image(str(tmp_path / "rgba.png"), "BGR")
    assert got.shape == (3, 4, 3) and got[0, 0].tolist() == [30, 20, 10]
    for name in ("deep.png", "deep.tif"):
        got = read_image(str(tmp_path / name), "RGB")
        assert got.shape == (3, 4, 3) and got.dtype == np.uint8, name
        expected = np.clip(np.floor(deep.astype(np.float64) * 255 / 65535 + 0.5), 0, 255)
        assert (got[..., 1] == expected).all(), (name, got[..., 1], expected)
        assert got.max() > 200  # not clipped to white or truncated to dark


@pytest.mark.parametrize("size", [(1, 1), (6000, 6000)])
def test_tiny_and_huge_images_run(tmp_path, dataset_name, small_cfg, size, single_thread):
    w, h = size
    Image.fromarray(np.full((h, w), 90, np.uint8), mode="L").save(tmp_path / "img.png")
    _coco_dataset(tmp_path, dataset_name, {"img.png": Image.open(tmp_path / "img.png")})
    cfg = small_cfg
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 256, 256
    (d,) = load_dataset_dicts([dataset_name])
    inputs = RetinaDatasetMapper(cfg, is_train=False, dataset_name=dataset_name)(d)
    assert inputs["image"].shape[0] == 3 and max(inputs["image"].shape[1:]) <= 256
    model = RetinaNetPlugin(cfg).eval()
    with torch.no_grad():
        (out,) = model([inputs])
    assert out["instances"].image_size == (h, w)
    boxes = out["instances"].pred_boxes.tensor
    assert torch.isfinite(boxes).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
