"""
COCO json with rotated boxes (5 numbers, XYWHA_ABS): Detectron2's own json writer and our
registration round-trip them; a rotated model refuses a json of 4-number boxes in one line.
"""
import json

import numpy as np
import pytest
from PIL import Image
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.structures import BoxMode

from retina_plugin.data import check_dataset_files, register_coco_json
from retina_plugin.data.coco_json import DatasetError
from tool_runs import BASE_CONFIG, REPO, ROTATED_OPTS, run_tool

BOXES = [[30.0, 20.0, 40.0, 10.0, 30.0], [60.5, 40.25, 12.0, 5.0, -90.0], [10.0, 50.0, 8.0, 3.0, 200.0]]


@pytest.fixture
def names(request):
    made = []
    yield lambda suffix: made.append(f"{request.node.name}_{suffix}") or made[-1]
    for name in made:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def _images(folder, count=1, size=(96, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(folder / f"{i}.png")
    return folder


def _write_json(path, boxes, annotation_ids=None):
    annotations = [{"id": (annotation_ids or range(1, len(boxes) + 1))[k], "image_id": 1, "category_id": 1, "bbox": b,
                    "area": 10.0, "iscrowd": 0} for k, b in enumerate(boxes)]  # fmt: skip
    data = {"images": [{"id": 1, "file_name": "0.png", "height": 64, "width": 96}], "annotations": annotations,
            "categories": [{"id": 1, "name": "ship"}]}  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def test_xywha_round_trip_through_detectron2s_json_writer(tmp_path, names):
    """Dataset dicts -> Detectron2's convert_to_coco_json -> register_coco_json(rotated) -> the same boxes."""
    images = _images(tmp_path / "images")
    source = names("source")
    annotations = [{"bbox": b, "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0, "iscrowd": 0} for b in BOXES]
    DatasetCatalog.register(source, lambda: [{"file_name": str(images / "0.png"), "image_id": 1, "height": 64, "width": 96,
                                              "annotations": annotations}])  # fmt: skip
    MetadataCatalog.get(source).set(thing_classes=["ship"])
    json_file = tmp_path / "rotated.json"
    convert_to_coco_json(source, str(json_file), allow_cached=False)
    assert [a["bbox"] for a in json.loads(json_file.read_text())["annotations"]] == BOXES  # 5 numbers each

    name = names("loaded")
    register_coco_json(name, json_file, images)
    check_dataset_files([name], rotated=True)
    (record,) = DatasetCatalog.get(name)
    assert [a["bbox_mode"] for a in record["annotations"]] == [BoxMode.XYWHA_ABS] * 3
    # The angle outside [-180, 180) is normalised, not refused: 200 -> -160.
    assert [a["bbox"] for a in record["annotations"]] == [BOXES[0], BOXES[1], [10.0, 50.0, 8.0, 3.0, -160.0]]
    assert MetadataCatalog.get(name).thing_classes == ["ship"]


def test_horizontal_json_keeps_its_boxes(tmp_path, names):
    name = names("horizontal")
    register_coco_json(name, _write_json(tmp_path / "h.json", [[1, 2, 30, 20]]), _images(tmp_path / "images"))
    (annotation,) = DatasetCatalog.get(name)[0]["annotations"]
    assert (annotation["bbox"], annotation["bbox_mode"]) == ([1, 2, 30, 20], BoxMode.XYWH_ABS)


@pytest.mark.parametrize(
    "box, message",
    [
        ([10, 20, 0, 4, 30], "(id 7) has bbox [10, 20, 0, 4, 30]: a rotated box of zero width or height"),
        ([10, 20, 5, 0, 30], "(id 7) has bbox [10, 20, 5, 0, 30]: a rotated box of zero width or height"),
        ([10, 20, 5, 4], None),
        ([10, 20, 5], "(id 7) bbox is not 4 numbers [x, y, width, height] or 5 [cx, cy, w, h, angle]"),
    ],
)
def test_bad_boxes_are_refused_naming_file_annotation_and_value(tmp_path, names, box, message):
    json_file = _write_json(tmp_path / "bad.json", [[1, 2, 5, 5, 0], box], annotation_ids=[3, 7])
    name = names("bad")
    if message is None:  # a horizontal model takes 4-number boxes
        register_coco_json(name, json_file, _images(tmp_path / "images"))
        return
    with pytest.raises(DatasetError) as e:
        register_coco_json(name, json_file, _images(tmp_path / "images"))
    assert str(e.value).startswith(f"Invalid COCO json {json_file}: annotations[1] ") and message in str(e.value)
    assert name not in DatasetCatalog.list()


FOUR_NUMBERS = (
    "(id 7) has bbox [10, 20, 5, 4]: 4 numbers [x, y, width, height], but the model is rotated "
    "(MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator) and takes 5, [cx, cy, w, h, angle] (XYWHA_ABS)"
)


def test_a_rotated_config_refuses_4_number_boxes_of_any_registered_json(tmp_path, names):
    """
    The one check every tool runs on its config's datasets (catalog.check_dataset_files): a json
    registered by the plugin or by Detectron2's own register_coco_instances, refused for a rotated
    model naming the file, the annotation and its bbox; taken by a horizontal one.
    """
    json_file = _write_json(tmp_path / "mixed.json", [[1, 2, 5, 5, 0], [10, 20, 5, 4]], annotation_ids=[3, 7])
    ours, theirs = names("ours"), names("theirs")
    register_coco_json(ours, json_file, _images(tmp_path / "images"))
    register_coco_instances(theirs, {}, str(json_file), str(tmp_path / "images"))
    for name in (ours, theirs):
        check_dataset_files([name])  # horizontal
        with pytest.raises(DatasetError) as e:
            check_dataset_files([name], rotated=True)
        assert str(e.value) == f"Invalid COCO json {json_file}: annotations[1] {FOUR_NUMBERS}"
    good = _write_json(tmp_path / "rotated.json", [[1, 2, 5, 5, 0], [10, 20, 5, 4, 30]])
    good_name = names("good")
    register_coco_instances(good_name, {}, str(good), str(tmp_path / "images"))
    check_dataset_files([good_name], rotated=True)  # 5 numbers each: taken


def test_a_json_rewritten_after_its_registration_is_checked_again(tmp_path, names):
    """
    register_coco_json validates a json once and the rotated check reads no second time; a json
    rewritten since (4-number boxes, or 5-number ones again) is read and judged anew.
    """
    json_file = _write_json(tmp_path / "ships.json", [[1, 2, 5, 5, 0], [10, 20, 5, 4, 30]], annotation_ids=[3, 7])
    name = names("ships")
    register_coco_json(name, json_file, _images(tmp_path / "images"))
    check_dataset_files([name], rotated=True)  # 5 numbers each: taken
    _write_json(json_file, [[1, 2, 5, 5, 0], [10, 20, 5, 4]], annotation_ids=[3, 7])
    with pytest.raises(DatasetError) as e:
        check_dataset_files([name], rotated=True)
    assert str(e.value) == f"Invalid COCO json {json_file}: annotations[1] {FOUR_NUMBERS}"
    _write_json(json_file, [[1, 2, 5, 5, 0], [10, 20, 5, 4, 30.5]], annotation_ids=[3, 7])
    check_dataset_files([name], rotated=True)


ROTATED_SWITCH = [*ROTATED_OPTS, "MODEL.DEVICE", "cpu"]


def refusal(json_file):
    return (
        f"Invalid COCO json {json_file}: annotations[0] (id 5) has bbox [1, 2, 30, 20]: 4 numbers "
        "[x, y, width, height], but the model is rotated (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator) and takes 5, "
        "[cx, cy, w, h, angle] (XYWHA_ABS)"
    )


# The eval-only run repeats the train run's wiring (train_net checks every dataset of the config through
# check_dataset_files, tested in-process above): it runs with the slow tests, keeping the suite under 15 minutes.
@pytest.mark.parametrize("split", ["train", pytest.param("eval-only", marks=pytest.mark.slow)])
def test_train_net_with_a_rotated_config_refuses_a_json_of_4_number_boxes(tmp_path, split):
    json_file = _write_json(tmp_path / "horizontal.json", [[1, 2, 30, 20]], annotation_ids=[5])
    data = ["--train-json"] if split == "train" else ["--eval-only", "--test-json"]
    images = ["--train-images" if split == "train" else "--test-images", str(_images(tmp_path / "images"))]
    run = run_tool(
        "tools/train_net.py", "--config-file", str(REPO / BASE_CONFIG), *data, str(json_file), *images,
        *ROTATED_SWITCH, "OUTPUT_DIR", str(tmp_path / "out"), check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.strip().splitlines()[-1] == f"train_net: error: {refusal(json_file)}"


@pytest.mark.slow  # a second subprocess run of the check covered in-process above and by train_net's run in the default suite
def test_analyze_results_with_a_rotated_config_refuses_a_json_of_4_number_boxes(tmp_path):
    json_file = _write_json(tmp_path / "horizontal.json", [[1, 2, 30, 20]], annotation_ids=[5])
    predictions = tmp_path / "results.json"
    predictions.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 20, 45], "score": 0.9}]))
    out = tmp_path / "analysis"
    run = run_tool(
        "tools/analyze_results.py", "--config-file", str(REPO / BASE_CONFIG), "--test-json", str(json_file),
        "--test-images", str(_images(tmp_path / "images")), "--predictions", str(predictions), "--output", str(out),
        *ROTATED_SWITCH, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.strip().splitlines()[-1] == f"analyze_results: error: {refusal(json_file)}"
    assert not out.exists()  # refused before anything is written
