"""
DOTA folders: a hand-written label file (header lines, known rectangles, a difficult object)
read into rotated dataset dicts and registered by name; each malformed line refused in one line
naming the file, the line and the value, with nothing registered.
"""
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from retina_plugin.data import DOTA_V1_CLASSES, register_dota
from retina_plugin.data.dota import DOTAFormatError, load_dota
from retina_plugin.data.rotated_shapes import make_rotated_shapes_image
from retina_plugin.ops import rotated_box_corners
from tool_runs import CONFIG, QUICK_OPTS, read_metrics, run_tool

LABELS = """imagesource:GoogleEarth
gsd:0.146343590398
10 20 50 20 50 30 10 30 small-vehicle 0
119.8205 44.3301 114.8205 35.6699 80.1795 55.6699 85.1795 64.3301 ship 0
95 50 105 50 105 90 95 90 large-vehicle 1

150 10 180 10 180 30 150 30 plane
"""
# The boxes by hand: centre, long side, short side, angle (le90: -90 for a long side upright).
EXPECTED = [
    ([30, 25, 40, 10, 0], "small-vehicle", 0),
    ([100, 50, 40, 10, 30], "ship", 0),
    ([100, 70, 40, 10, -90], "large-vehicle", 1),
    ([165, 20, 30, 20, 0], "plane", 0),  # no difficult flag: not difficult
]


def _dota_folder(root, labels=LABELS, stem="P0001", size=(200, 120)):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labelTxt").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(root / "images" / f"{stem}.png")
    (root / "labelTxt" / f"{stem}.txt").write_text(labels)
    return root


@pytest.fixture
def dataset_name(request):
    name = f"dota_{request.node.name}"
    yield name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_dota_file_becomes_rotated_dataset_dicts(tmp_path, dataset_name):
    folder = _dota_folder(tmp_path / "dota")
    metadata = register_dota(dataset_name, folder)
    assert metadata.thing_classes == list(DOTA_V1_CLASSES) and len(DOTA_V1_CLASSES) == 15
    (record,) = DatasetCatalog.get(dataset_name)
    assert (record["file_name"], record["width"], record["height"]) == (str(folder / "images" / "P0001.png"), 200, 120)
    assert len(record["annotations"]) == len(EXPECTED)
    for annotation, (box, name, difficult) in zip(record["annotations"], EXPECTED):
        assert annotation["bbox"] == pytest.approx(box, abs=2e-3)
        assert annotation["bbox_mode"] == BoxMode.XYWHA_ABS
        assert DOTA_V1_CLASSES[annotation["category_id"]] == name
        # A difficult object is a crowd region: Detectron2's mapper leaves it out of training.
        assert annotation["difficult"] == annotation["iscrowd"] == difficult


def test_given_classes_number_the_categories(tmp_path, dataset_name):
    labels = "0 0 10 0 10 5 0 5 car 0\n0 0 40 0 40 9 0 9 ship 1\n"
    metadata = register_dota(dataset_name, _dota_folder(tmp_path / "dota", labels), classes=["ship", "car"])
    assert metadata.thing_classes == ["ship", "car"]
    assert [a["category_id"] for a in DatasetCatalog.get(dataset_name)[0]["annotations"]] == [1, 0]


@pytest.mark.parametrize(
    "line, classes, message",
    [
        ("10 20 50 20 50 30 10 ship 0", None, "line 2: 7 coordinates, need 8"),
        ("10 20 x 20 50 30 10 30 ship 0", None, "line 2: coordinate 3 'x' is not a finite number"),
        ("10 20 nan 20 50 30 10 30 ship 0", None, "line 2: coordinate 3 'nan' is not a finite number"),
        ("10 20 50 20 50 30 10 30 boat 0", ["ship", "car"], "line 2: class 'boat' is not among the classes given (ship, car)"),
        ("10 20 50 20 50 30 10 30 boat 0", None, "line 2: class 'boat' is not among DOTA v1.0's 15 classes"),
        ("10 20 50 20 90 20 30 20 ship 0", None, "line 2: the polygon has zero area"),
        ("10 20 10 20 10 20 10 20 ship 0", None, "line 2: the polygon has zero area"),
        ("10 20 50 20 50 30 10 30 ship 2", None, "line 2: difficult flag '2' is not 0 or 1"),
    ],
)
def test_bad_line_is_refused_naming_file_line_and_value(tmp_path, dataset_name, line, classes, message):
    labels = "gsd:0.15\n" + line + "\n"
    folder = _dota_folder(tmp_path / "dota", labels)
    with pytest.raises(DOTAFormatError) as e:
        register_dota(dataset_name, folder, classes=classes)
    text = str(e.value)
    assert "\n" not in text
    assert str(folder / "labelTxt" / "P0001.txt") in text and message in text and repr(line) in text
    assert dataset_name not in DatasetCatalog.list()


def test_folder_problems_name_the_folder(tmp_path):
    with pytest.raises(DOTAFormatError, match=r"missing has no images/ \(a DOTA folder holds images/ and labelTxt/\)"):
        load_dota(tmp_path / "missing")
    folder = _dota_folder(tmp_path / "b")
    (folder / "images" / "P0001.png").unlink()
    with pytest.raises(DOTAFormatError, match=r"P0001.txt has no image P0001.png"):
        load_dota(folder)


def test_train_net_refuses_a_bad_dota_folder_in_one_line(tmp_path):
    folder = _dota_folder(tmp_path / "dota", "1 2 3 4 5 6 7 ship 0\n")
    run = run_tool("tools/train_net.py", "--config-file", str(CONFIG), "--train-dota", str(folder), "OUTPUT_DIR", str(tmp_path / "out"), check=False)
    assert run.returncode == 2, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("train_net: error: DOTA label file ") and "line 1: 7 coordinates, need 8" in last


def _shapes_dota_folder(root, count, seed):
    """A DOTA folder of `count` rotated-shapes images (ship, car as DOTA's ship, small-vehicle), every ship of the first image difficult."""
    names = ("ship", "small-vehicle")
    for i in range(count):
        image, objects = make_rotated_shapes_image(np.random.default_rng([seed, i]), 128, max_groups=2)
        lines = ["imagesource:synthetic", "gsd:0.5"]
        for cls_idx, box, _ in objects:
            corners = rotated_box_corners(torch.tensor([box], dtype=torch.float64))[0].flatten().tolist()
            lines.append(" ".join(f"{v:.2f}" for v in corners) + f" {names[cls_idx]} {int(i == 0 and cls_idx == 0)}")
        _dota_folder(root, "\n".join(lines) + "\n", stem=f"P{i:04d}", size=(128, 128))
        Image.fromarray(image[:, :, ::-1]).save(root / "images" / f"P{i:04d}.png")
    return root


# The horizontal config on DOTA folders runs with the slow tests (the rotated one covers the tool path).
@pytest.mark.parametrize("config", [pytest.param("shapes_R18_cpu.yaml", marks=pytest.mark.slow), "rotated_shapes_R18.yaml"])
def test_train_net_trains_and_evaluates_on_dota_folders(tmp_path, config):
    """
    A rotated model trains on the DOTA boxes, a horizontal one on their enclosing boxes; the folders
    are registered by name with their classes, and the evaluation runs.
    """
    train, val = _shapes_dota_folder(tmp_path / "train", 4, 1), _shapes_dota_folder(tmp_path / "val", 2, 2)
    out = tmp_path / "out"
    run = run_tool(
        "tools/train_net.py", "--config-file", str(CONFIG.parent / config), "--train-dota", str(train), "--test-dota", str(val),
        "--dota-classes", "ship,small-vehicle", *QUICK_OPTS, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert "Evaluation results for dota_test_val" in run.stdout + run.stderr and (out / "model_final.pth").is_file()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["DATASETS"]["TRAIN"], cfg["DATASETS"]["TEST"]) == (["dota_train_train"], ["dota_test_val"])
    assert cfg["MODEL"]["RETINANET"]["NUM_CLASSES"] == 2
    # A dataset of rotated boxes is scored with rotated IoU (DOTA's mAP50), whichever the model.
    assert any("dota/mAP50" in m for m in read_metrics(out)), read_metrics(out)[-1]
