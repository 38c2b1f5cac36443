"""
DeepForest's files (a Hugging Face folder: model.safetensors + config.json with label_dict;
older keys prefixed "model."), written here from a random torchvision RetinaNet, convert and
keep DeepForest's detections and class names; files of another format fail in one line naming
the file and the key; tools/convert_weights.py runs both ways as a user runs it.
"""
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.models.detection import retinanet_resnet50_fpn

import tool_runs
from random_torchvision import HEIGHT, WIDTH, assert_same_detections, image, random_retinanet
from retina_plugin.api import Detector
from retina_plugin.cli.convert_weights import main
from retina_plugin.config import load_config
from retina_plugin.weights.convert import convert_to_plugin

LABEL_DICT = {"Tree": 0, "Snag": 1}
# Not DeepForest's defaults (0.1, 0.05): the values must come from the file.
DEEPFOREST_CONFIG = {"num_classes": 2, "label_dict": LABEL_DICT, "score_thresh": 0.08, "nms_thresh": 0.3, "detections_per_img": 100, "topk_candidates": 500}


@pytest.fixture(scope="module")
def deepforest_model():
    return random_retinanet("torchvision", num_classes=2, seed=1)


def write_deepforest_folder(folder, model, prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(DEEPFOREST_CONFIG))
    return folder


@pytest.mark.parametrize("prefix", ["", "model."])
@torch.no_grad()
def test_deepforest_folder_gives_its_detections_thresholds_and_class_names(deepforest_model, tmp_path, prefix, single_thread):
    folder = write_deepforest_folder(tmp_path / "deepforest-tree", deepforest_model, prefix)
    config = convert_to_plugin("deepforest", str(folder), str(tmp_path / "out"))
    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.RETINA_PLUGIN.WINOGRAD", "False", "MODEL.RETINA_PLUGIN.TILE_SIZE", "0"])  # the whole image, as predict_image
    node = cfg.MODEL.RETINANET
    assert (node.SCORE_THRESH_TEST, node.NMS_THRESH_TEST, node.TOPK_CANDIDATES_TEST) == (0.08, 0.3, 500)
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100 and node.NUM_CLASSES == 2
    detector = Detector.from_config(cfg)
    assert detector.model.class_names == ["Tree", "Snag"]

    # DeepForest's model: torchvision's RetinaNet with the config.json's thresholds, on the same 8-bit image.
    reference = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, score_thresh=0.08, nms_thresh=0.3, detections_per_img=100,
        topk_candidates=500,
    ).eval()  # fmt: skip
    reference.load_state_dict(deepforest_model.state_dict())
    reference.transform.min_size, reference.transform.max_size = (HEIGHT,), 10000
    rgb = (image() * 255).round().to(torch.uint8)
    (theirs,) = reference([rgb.float() / 255])
    bgr = rgb.flip(0).permute(1, 2, 0).numpy()
    ours = detector.predict(bgr)
    assert len(theirs["scores"]) >= 10 and ours.image_size == (HEIGHT, WIDTH)
    assert_same_detections((ours.pred_boxes.tensor, ours.scores, ours.pred_classes), (theirs["boxes"], theirs["scores"], theirs["labels"]))
    frame = detector.predict_frame(bgr)
    assert list(frame["label"]) == [["Tree", "Snag"][c] for c in frame["class_id"]] and set(frame["label"]) == {"Tree", "Snag"}


@pytest.fixture(scope="module")
def converted_deepforest(deepforest_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("deepforest")
    folder = write_deepforest_folder(root / "deepforest-tree", deepforest_model)
    convert_to_plugin("deepforest", str(folder), str(root / "out"))
    return root


def wrong_files(root, deepforest_model):
    """(--from, the file, the line expected) for files that are not the format named."""
    truncated = root / "truncated.safetensors"
    truncated.write_bytes((root / "deepforest-tree" / "model.safetensors").read_bytes()[:5000])
    not_deepforest = root / "coco-folder"
    not_deepforest.mkdir(exist_ok=True)
    (not_deepforest / "model.safetensors").write_bytes((root / "deepforest-tree" / "model.safetensors").read_bytes())
    (not_deepforest / "config.json").write_text(json.dumps({"architectures": ["DetrForObjectDetection"], "id2label": {}}))
    v2 = root / "v2.pth"
    torch.save(random_retinanet("torchvision-v2", num_classes=2).state_dict(), v2)
    plugin = root / "out" / "model_final.pth"  # a Detectron2-named checkpoint
    v1 = root / "deepforest-tree" / "model.safetensors"
    return [
        ("torchvision", plugin, rf"{plugin}: not a torchvision RetinaNet: unexpected key 'backbone\.fpn_lateral3\.weight'"),
        ("deepforest", truncated, rf"{truncated}: not a readable safetensors file"),
        ("deepforest", not_deepforest, rf"{not_deepforest}/config\.json: not a DeepForest config\.json: no 'label_dict' or 'num_classes' \(found \['architectures', 'id2label'\]\)"),
        ("torchvision", v2, rf"{v2}: not a torchvision RetinaNet: unexpected key 'head\.classification_head\.conv\.0\.1\.weight'"),
        ("torchvision-v2", v1, rf"{v1}: not a torchvision-v2 RetinaNet: unexpected key 'head\.classification_head\.conv\.0\.0\.bias'"),
    ]


def test_a_file_of_another_format_is_one_line_naming_the_file_and_key(converted_deepforest, deepforest_model, tmp_path, capsys):
    for source, path, expected in wrong_files(converted_deepforest, deepforest_model):
        with pytest.raises(SystemExit) as exit_info:
            main(["--from", source, "--input", str(path), "--output", str(tmp_path / source)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert re.match(rf"convert_weights: error: {expected}", err), err
    with pytest.raises(SystemExit):
        main(["--to", "torchvision", "--config-file", tool_runs.BASE_CONFIG, "--input", str(converted_deepforest / "out" / "model_final.pth"), "--output", str(tmp_path / "x.pth")])
    assert re.match(r"convert_weights: error: MODEL\.PIXEL_MEAN = \[103\.53.*torchvision's retinanet_resnet50_fpn has", capsys.readouterr().err)


def test_tools_convert_predict_raster_labels_and_back_to_deepforest(converted_deepforest, deepforest_model, tmp_path):
    """The user's path: convert, predict_raster labels with DeepForest's class names, fine-tuned weights go back."""
    import geopandas

    from retina_plugin.geo.scenes import write_shapes_scene

    out = tmp_path / "out"
    folder = converted_deepforest / "deepforest-tree"
    tool_runs.run_tool("tools/convert_weights.py", "--from", "deepforest", "--input", str(folder), "--output", str(out))
    scene = write_shapes_scene(str(tmp_path / "scene.tif"), 256, seed=3)
    detections = tmp_path / "trees.gpkg"
    tool_runs.run_tool(
        "tools/predict_raster.py", "--config-file", str(out / "config.yaml"), "--input", scene.path,
        "--output", str(detections), "--tile", "256", "--no-progress",
    )  # fmt: skip
    frame = geopandas.read_file(detections)
    assert len(frame) > 0 and set(frame["label"]) <= {"Tree", "Snag"} and len(set(frame["label"])) == 2

    back = tmp_path / "deepforest-back"
    tool_runs.run_tool(
        "tools/convert_weights.py", "--to", "deepforest", "--config-file", str(out / "config.yaml"),
        "--input", str(out / "model_final.pth"), "--output", str(back),
    )  # fmt: skip
    assert json.loads((back / "config.json").read_text()) == DEEPFOREST_CONFIG
    state = load_file(str(back / "model.safetensors"))
    original = deepforest_model.state_dict()
    assert sorted(state) == sorted(original)
    assert all(torch.equal(state[k], original[k]) for k in original if not k.endswith("num_batches_tracked"))
    retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2).load_state_dict(state, strict=True)


def test_lightning_checkpoint_with_label_dict(deepforest_model, tmp_path):
    """A DeepForest 1.x Lightning .ckpt: keys under state_dict prefixed "model.", label_dict beside them."""
    state = {"model." + k: v for k, v in deepforest_model.state_dict().items()}
    torch.save({"state_dict": state, "label_dict": {"Bird": 1, "Nest": 0}, "epoch": 3}, tmp_path / "birds.ckpt")
    convert_to_plugin("deepforest", str(tmp_path / "birds.ckpt"), str(tmp_path / "out"))
    checkpoint = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)
    assert checkpoint["class_names"] == ["Nest", "Bird"]
    cfg = load_config(str(tmp_path / "out" / "config.yaml"))
    assert (cfg.MODEL.RETINANET.SCORE_THRESH_TEST, cfg.MODEL.RETINANET.NMS_THRESH_TEST) == (0.1, 0.05)  # DeepForest's defaults
