"""
Fine-tuning by class name (retina_plugin/weights/class_rows.py through RetinaCheckpointer): a
model of `make run`'s shapes (circle, square, triangle) fine-tuned to `square, hexagon` keeps
the square rows of the class-score layer bit for bit; a Detectron2 model-zoo COCO file counts
as named with COCO's 80 classes; a checkpoint without names never keeps a row.
"""
import json
import logging
import math
import pickle

import cv2
import numpy as np
import pytest
import torch

from retina_plugin import load_config
from retina_plugin.data.coco_json import register_coco_json
from retina_plugin.data.shapes import SHAPES_CLASSES
from retina_plugin.engine.trainer import Trainer
from retina_plugin.modeling.meta_arch import RetinaNetPlugin
from retina_plugin.weights.checkpoint import RetinaCheckpointer
from retina_plugin.weights.class_rows import COCO_THING_CLASSES, DETECTRON2_ZOO_AUTHOR
from tool_runs import CONFIG, QUICK_OPTS, run_tool

CHECKPOINT_LOGGER = "fvcore.common.checkpoint"
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)  # MODEL.RETINANET.PRIOR_PROB 0.01
# The model of QUICK_OPTS (one conv per subnet) on shapes_R18_cpu.yaml.
MODEL_OPTS = ["MODEL.RETINANET.NUM_CONVS", "1", "DATALOADER.NUM_WORKERS", "0"]
# What the checkpointer logs when the shapes model starts training on `square, hexagon`.
FINE_TUNE_LINE = (
    "Class-score rows by class name, from the checkpoint (3 classes) to the training data's 2: kept square (1 -> 0); "
    "new, initialised from PRIOR_PROB: hexagon (1); not in the training data: circle, triangle"
)


def _model_cfg(num_classes, *opts):
    return load_config(str(CONFIG), [*MODEL_OPTS, "MODEL.RETINANET.NUM_CLASSES", str(num_classes), *opts])


def _rows(tensor, num_classes):
    """(A, K, ...) view of a class-score weight (A*K, C, 3, 3) or bias (A*K,)."""
    return tensor.detach().reshape(-1, num_classes, *tensor.shape[1:])


def _distinct_class_scores(model, seed=5):
    """Give every class-score row its own values, so that a row copied from the wrong class shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.cls_score.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _shapes_checkpoint(folder):
    """A 3-class (circle, square, triangle) model of shapes_R18_cpu.yaml + MODEL_OPTS, saved by RetinaCheckpointer."""
    torch.manual_seed(0)
    model = _distinct_class_scores(RetinaNetPlugin(_model_cfg(3)))
    RetinaCheckpointer(model, str(folder), class_names=list(SHAPES_CLASSES)).save("shapes")
    return model, str(folder / "shapes.pth")


def _square_hexagon_dataset(root, num_images=4, size=128):
    """A COCO json of `num_images` images with one square and one hexagon each; returns (json, image folder)."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(num_images):
        image = np.full((size, size, 3), 60 + 30 * i, np.uint8)
        cv2.rectangle(image, (10 + 5 * i, 12), (40 + 5 * i, 42), (20, 200, 240), thickness=-1)
        angles = np.arange(6) * np.pi / 3
        centre, radius = (85, 80 - 4 * i), 18
        hexagon = np.round(np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1))
        cv2.fillPoly(image, [hexagon.astype(np.int32)], (230, 40, 90))
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        x0, y0 = hexagon.min(0)
        x1, y1 = hexagon.max(0) + 1
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size})
        for category, box in ((1, [10 + 5 * i, 12, 31, 31]), (2, [x0, y0, x1 - x0, y1 - y0])):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})  # fmt: skip
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "hexagon"}]
    json_file = root / "square_hexagon.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(json_file), str(root / "images")


def _assert_square_kept_hexagon_fresh(old_model, cls_score, fresh):
    """Square: the old model's class 1 rows, bit for bit; hexagon: the head's initialisation `fresh`."""
    for name in ("weight", "bias"):
        old, new = _rows(getattr(old_model.head.cls_score, name), 3), _rows(getattr(cls_score, name), 2)
        assert torch.equal(new[:, 0], old[:, 1]), name
        assert torch.equal(new[:, 1], _rows(fresh[name], 2)[:, 1]), name
    assert torch.all(_rows(cls_score.bias, 2)[:, 1] == torch.tensor(PRIOR_BIAS, dtype=torch.float32))


def _assert_same_square_logits(old_model, new_model):
    """The heads score square alike on the same features (as the model lays its logits out: (N, Hi*Wi*A, K))."""
    features = [torch.randn(1, old_model.head.cls_score.in_channels, 6, 6, generator=torch.Generator().manual_seed(4))]
    with torch.no_grad():
        old_logits, new_logits = old_model.head(features)[0][0], new_model.head(features)[0][0]
    torch.testing.assert_close(new_logits[..., 0], old_logits[..., 1], rtol=0, atol=1e-5)


def test_the_trainer_keeps_the_square_rows_before_the_first_step(tmp_path, caplog):
    old_model, weights = _shapes_checkpoint(tmp_path)
    json_file, images = _square_hexagon_dataset(tmp_path / "data")
    register_coco_json("finetune_square_hexagon", json_file, images)
    cfg = _model_cfg(
        2, "MODEL.WEIGHTS", weights, "DATASETS.TRAIN", ("finetune_square_hexagon",), "DATASETS.TEST", (),
        "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", "128",
        "OUTPUT_DIR", str(tmp_path / "out"),
    )  # fmt: skip
    trainer = Trainer(cfg)
    fresh = {k: v.clone() for k, v in trainer.model.head.cls_score.state_dict().items()}
    with caplog.at_level(logging.INFO, logger=CHECKPOINT_LOGGER):
        trainer.resume_or_load(resume=False)
    assert trainer.start_iter == 0
    _assert_square_kept_hexagon_fresh(old_model, trainer.model.head.cls_score, fresh)
    _assert_same_square_logits(old_model, trainer.model)
    # Everything but the class scores is the checkpoint's.
    old_state = old_model.state_dict()
    for key, value in trainer.model.state_dict().items():
        if not key.startswith("head.cls_score."):
            assert torch.equal(value, old_state[key]), key
    assert FINE_TUNE_LINE in caplog.text
    assert "NUM_CLASSES differs" not in caplog.text


@pytest.mark.parametrize(
    "new_names, kept, warning",
    [
        (("triangle", "circle", "square"), {0: 2, 1: 0, 2: 1}, None),  # same classes, other order: rows follow the names
        (("Square", "hexagon"), {}, "Class 'Square' of the training data starts from scratch: the checkpoint has 'square'"),
        (("square", "square", "circle"), {2: 0}, None),  # a name twice is ambiguous: neither square is kept
    ],
)
def test_rows_follow_names_exactly(tmp_path, caplog, new_names, kept, warning):
    old_model, weights = _shapes_checkpoint(tmp_path)
    torch.manual_seed(1)
    model = RetinaNetPlugin(_model_cfg(len(new_names)))
    fresh = {k: v.clone() for k, v in model.head.cls_score.state_dict().items()}
    with caplog.at_level(logging.INFO, logger=CHECKPOINT_LOGGER):
        RetinaCheckpointer(model, class_names=list(new_names)).load(weights)
    for name in ("weight", "bias"):
        old, new = _rows(getattr(old_model.head.cls_score, name), 3), _rows(getattr(model.head.cls_score, name), len(new_names))
        for k in range(len(new_names)):
            expected = old[:, kept[k]] if k in kept else _rows(fresh[name], len(new_names))[:, k]
            assert torch.equal(new[:, k], expected), (name, k)
    assert "Class-score rows by class name, from the checkpoint (3 classes)" in caplog.text
    if warning:
        assert warning in caplog.text


def test_the_same_names_in_the_same_order_are_a_plain_load(tmp_path, caplog):
    old_model, weights = _shapes_checkpoint(tmp_path)
    model = RetinaNetPlugin(_model_cfg(3))
    with caplog.at_level(logging.INFO, logger=CHECKPOINT_LOGGER):
        RetinaCheckpointer(model, class_names=list(SHAPES_CLASSES)).load(weights)
    old_state = old_model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, old_state[key]), key
    assert "Class-score rows by class name" not in caplog.text


def _zoo_pkl(model, path, **extra):
    """`model`'s state_dict in Detectron2's model-zoo .pkl layout: a dict of numpy arrays under "model"."""
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()}, **extra}, f)
    return str(path)


def test_a_detectron2_zoo_coco_model_counts_as_named_with_cocos_classes(tmp_path, caplog):
    torch.manual_seed(2)
    coco_model = _distinct_class_scores(RetinaNetPlugin(_model_cfg(80)))
    zoo = _zoo_pkl(coco_model, tmp_path / "model_final_zoo.pkl", __author__=DETECTRON2_ZOO_AUTHOR)
    new_names = ["car", "person", "bicycle"]
    model = RetinaNetPlugin(_model_cfg(3))
    with caplog.at_level(logging.INFO, logger=CHECKPOINT_LOGGER):
        RetinaCheckpointer(model, class_names=new_names).load(zoo)
    assert COCO_THING_CLASSES[:3] == ("person", "bicycle", "car")
    for name in ("weight", "bias"):
        old, new = _rows(getattr(coco_model.head.cls_score, name), 80), _rows(getattr(model.head.cls_score, name), 3)
        for k, coco_index in enumerate((2, 0, 1)):
            assert torch.equal(new[:, k], old[:, coco_index]), (name, k)
    assert (
        "from a Detectron2 model-zoo COCO model (80 classes) to the training data's 3: kept car (2 -> 0), "
        "person (0 -> 1), bicycle (1 -> 2); new, initialised from PRIOR_PROB: none"
    ) in caplog.text


def test_weights_without_names_keep_no_row(tmp_path, caplog):
    # The same 80-class weights, but neither named nor from the zoo: the class-score layer is dropped.
    coco_model = _distinct_class_scores(RetinaNetPlugin(_model_cfg(80)))
    RetinaCheckpointer(coco_model, str(tmp_path)).save("unnamed")
    for weights in (str(tmp_path / "unnamed.pth"), _zoo_pkl(coco_model, tmp_path / "other.pkl", __author__="someone")):
        torch.manual_seed(3)
        model = RetinaNetPlugin(_model_cfg(3))
        fresh = {k: v.clone() for k, v in model.head.cls_score.state_dict().items()}
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=CHECKPOINT_LOGGER):
            RetinaCheckpointer(model, class_names=["car", "person", "bicycle"]).load(weights)
        for key, value in model.head.cls_score.state_dict().items():
            assert torch.equal(value, fresh[key]), (weights, key)
        assert "NUM_CLASSES differs: the checkpoint's class-score layer has 80 classes, the model 3" in caplog.text
        assert "Class-score rows by class name" not in caplog.text


def _fine_tune_inputs(tmp_path):
    """The 3-class shapes checkpoint and the --train/--test-json flags of a square/hexagon dataset."""
    _, weights = _shapes_checkpoint(tmp_path)
    json_file, images = _square_hexagon_dataset(tmp_path / "data")
    return weights, ["--train-json", json_file, "--train-images", images, "--test-json", json_file, "--test-images", images]


def test_train_net_fine_tunes_by_name(tmp_path):
    weights, data = _fine_tune_inputs(tmp_path)
    out = tmp_path / "yaml"
    proc = run_tool("tools/train_net.py", "--config-file", str(CONFIG), *data, *QUICK_OPTS,
                    "SOLVER.MAX_ITER", "2", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(out))  # fmt: skip
    assert FINE_TUNE_LINE in proc.stdout + proc.stderr
    assert FINE_TUNE_LINE in (out / "log.txt").read_text()
    assert torch.load(out / "model_final.pth", weights_only=True)["class_names"] == ["square", "hexagon"]


def test_lazyconfig_train_net_fine_tunes_by_name(tmp_path):
    weights, data = _fine_tune_inputs(tmp_path)
    out = tmp_path / "lazy"
    proc = run_tool(
        "tools/lazyconfig_train_net.py", "--config-file", "configs/shapes_R18_cpu.py", *data,
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128]", "dataloader.train.mapper.augmentations.0.max_size=128",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128", "dataloader.test.mapper.augmentations.0.max_size=128",
        "model.head.num_convs=1", "train.max_iter=1", f"train.init_checkpoint={weights}", f"train.output_dir={out}",
    )  # fmt: skip
    assert FINE_TUNE_LINE in proc.stdout + proc.stderr
    assert torch.load(out / "model_final.pth", weights_only=True)["class_names"] == ["square", "hexagon"]
