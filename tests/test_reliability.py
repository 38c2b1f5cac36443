"""
Bad input ends in a clear message or a correct result; an interrupted run loses nothing.
Images, boxes and runs here are real: files on disk, Detectron2's loaders, subprocesses killed
with SIGKILL.
"""
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retina_plugin.anchor_generator import anchor_tensors
from retina_plugin.checkpoint import RetinaCheckpointer, UnsafeCheckpointError
from retina_plugin.data import register_coco_json
from retina_plugin.data.boxes import sanitize_boxes
from retina_plugin.data.loader import build_resumable_train_loader, load_dataset_dicts
from retina_plugin.data.mapper import ImageReadError, RetinaDatasetMapper, read_image
from retina_plugin.meta_arch import RetinaNetPlugin
from test_train_net import CONFIG, QUICK_OPTS, REPO, _dataset_args

# ---------------------------------------------------------------------------------------------
# Data


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
        dicts = load_dataset_dicts([dataset_name], skip_missing=True)
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["a.png", "b.png"]
    assert "1 of 3 image files do not exist" in caplog.text and "skipped" in caplog.text


def test_unreadable_image_is_named_with_its_dataset_or_skipped(tmp_path, dataset_name, small_cfg, caplog):
    _coco_dataset(tmp_path, dataset_name, {"a.png": _rgb(value=10), "broken.png": b"\x89PNG\r\n\x1a\n not really", "b.png": _rgb(value=200)})
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


def test_sanitize_boxes_counts_each_kind():
    nan = float("nan")
    boxes = torch.tensor([
        [10, 10, 20, 20],      # fine
        [nan, 0, 5, 5],        # non-finite
        [0, 0, float("inf"), 5],
        [5, 5, 5, 9],          # zero width
        [9, 9, 4, 12],         # negative width
        [200, 10, 230, 20],    # wholly right of the 100-wide image
        [-10, -5, 30, 40],     # partly outside: clipped
        [90, 40, 120, 60],     # partly outside: clipped
    ], dtype=torch.float32)
    kept, keep, counts = sanitize_boxes(boxes, (50, 100))
    assert keep.tolist() == [True, False, False, False, False, False, True, True]
    assert counts == {"non-finite": 2, "degenerate": 2, "outside image": 1, "clipped": 2}
    assert kept.tolist() == [[10, 10, 20, 20], [0, 0, 30, 40], [90, 40, 100, 50]]


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


def test_model_drops_bad_ground_truth_that_bypassed_the_loader(small_cfg, make_batch, single_thread):
    model = RetinaNetPlugin(small_cfg).train()
    batch = make_batch(counts=(3, 2), sizes=((96, 128), (96, 128)))
    batch[0]["instances"].gt_boxes.tensor[0] = torch.tensor([float("nan"), 1.0, 5.0, 5.0])
    batch[0]["instances"].gt_boxes.tensor[1] = torch.tensor([50.0, 50.0, 50.0, 80.0])
    batch[1]["instances"].gt_boxes.tensor[0] = torch.tensor([-40.0, -40.0, 500.0, 30.0])
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


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


# ---------------------------------------------------------------------------------------------
# Matching + loss, property-based


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(8, 160),
    width=st.integers(8, 160),
    boxes=st.lists(
        st.tuples(*[st.one_of(st.floats(-200, 400, allow_nan=False), st.just(float("nan")), st.just(float("inf")))] * 4),
        max_size=12,
    ),
    seed=st.integers(0, 2**16),
)
def test_matching_and_loss_stay_finite_for_any_boxes(small_cfg, single_thread, height, width, boxes, seed):
    torch.manual_seed(seed)
    model = _property_model(small_cfg)
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.randint(0, 3, (len(boxes),))
    batch = [{"image": torch.rand(3, height, width) * 255, "instances": inst}]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), (losses, boxes)

    anchors = torch.cat(anchor_tensors(model.anchor_generator,
        [torch.zeros(1, 1, -(-height // s), -(-width // s)) for s in (8, 16, 32, 64, 128)]))
    labels, matched = model.label_anchors(anchors, [inst])
    assert ((labels >= -1) & (labels <= 3)).all()
    foreground = (labels >= 0) & (labels < 3)
    fg_boxes = matched[foreground]
    assert torch.isfinite(fg_boxes).all()
    assert (fg_boxes[:, 0] >= 0).all() and (fg_boxes[:, 2] <= width).all()
    assert (fg_boxes[:, 1] >= 0).all() and (fg_boxes[:, 3] <= height).all()
    assert (fg_boxes[:, 2] > fg_boxes[:, 0]).all() and (fg_boxes[:, 3] > fg_boxes[:, 1]).all()


_PROPERTY_MODEL = {}


def _property_model(cfg):
    if "model" not in _PROPERTY_MODEL:
        cfg.MODEL.RETINANET.NUM_CONVS = 1
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        _PROPERTY_MODEL["model"] = RetinaNetPlugin(cfg).train()
    return _PROPERTY_MODEL["model"]


# ---------------------------------------------------------------------------------------------
# Training runs


def test_non_finite_loss_stops_the_run_with_the_losses(tiny_shapes, tmp_path):
    out = tmp_path / "diverge"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(CONFIG), *_dataset_args(tiny_shapes),
         *QUICK_OPTS, "SOLVER.MAX_ITER", "30", "SOLVER.BASE_LR", "1e6", "SOLVER.WARMUP_ITERS", "0",
         "SOLVER.CLIP_GRADIENTS.ENABLED", "False", "OUTPUT_DIR", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "Loss became infinite or NaN at iteration=" in message, message[-3000:]
    assert "loss_cls" in message.split("Loss became infinite or NaN")[1][:400]
    assert not (out / "model_final.pth").exists()  # the diverged weights were not saved as a result


def _worker(out, *args, resume=False, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    argv = [sys.executable, str(REPO / "tests/resume_worker.py")] + (["--resume"] if resume else [])
    return subprocess.Popen(argv + list(args) + ["OUTPUT_DIR", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _losses(out):
    by_iter = {}
    for line in (out / "losses.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_iter[record.pop("iteration")] = record  # a resumed run's record replaces the killed run's
    return by_iter


def _kill_when(proc, marker, timeout=300):
    start = time.time()
    while not marker.exists():
        assert proc.poll() is None, f"worker ended before {marker.name}:\n{proc.stdout.read()[-4000:]}"
        assert time.time() - start < timeout, f"no {marker.name} after {timeout} s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _finish(proc):
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    return output


def test_killed_run_resumes_with_the_uninterrupted_losses(tiny_shapes, tmp_path):
    # 8 iterations, checkpoints after iterations 2 and 5 (period 3), augmentation on (flip).
    args = ["--config-file", str(CONFIG), *_dataset_args(tiny_shapes), *QUICK_OPTS,
            "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()"]
    whole, between, mid_write = tmp_path / "whole", tmp_path / "between", tmp_path / "mid_write"
    _finish(_worker(whole, *args))
    reference = _losses(whole)
    assert sorted(reference) == list(range(8))

    # Killed after iteration 6, between the checkpoints of 5 and 8.
    _kill_when(_worker(between, *args, env_extra={"RETINA_TEST_PAUSE_AFTER_ITER": "6"}), between / "losses.jsonl.paused")
    assert (between / "last_checkpoint").read_text() == "model_0000005.pth"
    log = _finish(_worker(between, *args, resume=True))
    assert "Starting training from iteration 6" in log
    resumed = _losses(between)
    for it in range(8):
        assert resumed[it] == reference[it], (it, resumed[it], reference[it])

    # Killed half-way through writing the second checkpoint: the first stays tagged and whole.
    _kill_when(_worker(mid_write, *args, env_extra={"RETINA_TEST_PAUSE_IN_SAVE": "2"}), mid_write / "save.paused")
    assert (mid_write / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (mid_write / "model_0000005.pth").exists()
    assert torch.load(mid_write / "model_0000002.pth", weights_only=True)["iteration"] == 2
    log = _finish(_worker(mid_write, *args, resume=True))
    assert "Starting training from iteration 3" in log
    resumed = _losses(mid_write)
    for it in range(8):
        assert resumed[it] == reference[it], (it, resumed[it], reference[it])


def test_weights_with_another_num_classes_load_all_but_the_class_scores(small_cfg, tmp_path, caplog):
    source = RetinaNetPlugin(small_cfg)
    RetinaCheckpointer(source, str(tmp_path)).save("three_classes")
    small_cfg.MODEL.RETINANET.NUM_CLASSES = 5
    torch.manual_seed(123)
    target = RetinaNetPlugin(small_cfg)
    fresh_scores = {k: v.clone() for k, v in target.head.cls_score.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        RetinaCheckpointer(target).load(str(tmp_path / "three_classes.pth"))
    assert "NUM_CLASSES differs: the checkpoint's class-score layer has 3 classes, the model 5" in caplog.text
    source_state, target_state = source.state_dict(), target.state_dict()
    for key in source_state:
        if key.startswith("head.cls_score."):
            assert torch.equal(target_state[key], fresh_scores[key.rsplit(".", 1)[1]]), key
        else:
            assert torch.equal(target_state[key], source_state[key]), key


# ---------------------------------------------------------------------------------------------
# Configs and files


@pytest.mark.parametrize(
    "opts, words",
    [
        (["MODEL.RETINA_PLUGIN.NUM_CLASSSES", "4"], "MODEL.RETINA_PLUGIN.NUM_CLASSSES"),
        (["MODEL.RETINANET.NUM_CLASSES", "four"], "MODEL.RETINANET.NUM_CLASSES"),
        (["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-2.0"], "cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA = -2.0"),
    ],
)
def test_bad_config_option_fails_before_building_naming_the_key(tmp_path, opts, words):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(CONFIG), *opts, "OUTPUT_DIR", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert words in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "log.txt").exists()  # nothing was set up or built


def test_bad_key_in_a_config_file_is_named(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f'_BASE_: "{CONFIG}"\nMODEL:\n  RETINA_PLUGIN:\n    ANCHOR_SIZE: [8, 16, 32, 64, 128]\n')
    proc = subprocess.run([sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(config) in proc.stderr and "MODEL.RETINA_PLUGIN.ANCHOR_SIZE" in proc.stderr, proc.stderr[-2000:]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_cannot_run_code_when_loaded(small_cfg, tmp_path):
    model = RetinaNetPlugin(small_cfg)
    marker = tmp_path / "code_ran"
    evil_pth = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "extra": _RunsCode(marker)}, evil_pth)
    with pytest.raises(UnsafeCheckpointError) as e:
        RetinaCheckpointer(model).load(str(evil_pth))
    assert str(evil_pth) in str(e.value)

    evil_pkl = tmp_path / "evil.pkl"
    evil_pkl.write_bytes(pickle.dumps({"model": {}, "__author__": _RunsCode(marker)}))
    with pytest.raises(UnsafeCheckpointError) as e:
        RetinaCheckpointer(model).load(str(evil_pkl))
    assert str(evil_pkl) in str(e.value) and "posix.system" in str(e.value)
    assert not marker.exists()

    # A model-zoo style .pkl (numpy arrays in a dict) loads.
    weights = {k: v.numpy() for k, v in RetinaNetPlugin(small_cfg).state_dict().items()}
    zoo_pkl = tmp_path / "zoo.pkl"
    zoo_pkl.write_bytes(pickle.dumps({"model": weights, "__author__": "someone"}))
    RetinaCheckpointer(model).load(str(zoo_pkl))
    for key, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), weights[key]), key


def test_checkpoint_write_that_fails_leaves_the_previous_one(small_cfg, tmp_path, monkeypatch):
    model = RetinaNetPlugin(small_cfg)
    checkpointer = RetinaCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("retina_plugin.checkpoint.torch.save", disk_full)
    with pytest.raises(OSError):
        checkpointer.save("model_final", iteration=2)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
