"""
The mapper of a rotated model: Detectron2's flips, 90-degree rotations and resizes move XYWHA
boxes as computed by hand, and the moved box still holds the moved object's pixels.
"""
import cv2
import numpy as np
import pytest
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, RotatedBoxes

from retina_plugin.config import ConfigError
from retina_plugin.data.boxes import sanitize_dataset_dicts
from retina_plugin.data.mapper import RetinaDatasetMapper
from retina_plugin.data.rotated_boxes import xywha_contains

W, H = 64, 48
BOX = [20.0, 14.0, 16.0, 6.0, 30.0]


@pytest.fixture
def image_file(tmp_path):
    """A W x H image, black but for the pixels whose centre (i + 0.5, j + 0.5) lies in BOX, white."""
    ys, xs = np.mgrid[0:H, 0:W]
    inside = xywha_contains(BOX, np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)).reshape(H, W)
    image = np.where(inside[:, :, None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), image)
    return str(path)


def _map(image_file, augmentations, annotations=None):
    mapper = RetinaDatasetMapper(is_train=True, augmentations=augmentations, image_format="BGR", rotated=True)
    if annotations is None:
        annotations = [{"bbox": list(BOX), "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 1}]
    return mapper({"file_name": image_file, "height": H, "width": W, "annotations": annotations})


@pytest.mark.parametrize(
    "augmentation, expected, size",
    [
        (T.HFlipTransform(W), [W - 20, 14, 16, 6, -30], (H, W)),
        (T.VFlipTransform(H), [20, H - 14, 16, 6, -30], (H, W)),
        # 90 counter-clockwise, the image W x H becoming H x W: (x, y) -> (y, W - x), the angle + 90.
        (T.RotationTransform(H, W, 90), [14, W - 20, 16, 6, 120], (W, H)),
        (T.RotationTransform(H, W, 180), [W - 20, H - 14, 16, 6, -150], (H, W)),
        # 90 clockwise: (x, y) -> (H - y, x), the angle - 90.
        (T.RotationTransform(H, W, -90), [H - 14, 20, 16, 6, -60], (W, H)),
        (T.ResizeTransform(H, W, 2 * H, 2 * W), [40, 28, 32, 12, 30], (2 * H, 2 * W)),
        (T.CropTransform(4, 2, 40, 30), [16, 12, 16, 6, 30], (30, 40)),
    ],
)
def test_transform_moves_the_rotated_box_as_by_hand(image_file, augmentation, expected, size):
    mapped = _map(image_file, [augmentation])
    assert tuple(mapped["image"].shape[1:]) == size
    boxes = mapped["instances"].gt_boxes
    assert isinstance(boxes, RotatedBoxes)
    assert boxes.tensor.tolist()[0] == pytest.approx(expected, abs=1e-3)
    # The object's pixels moved with the image: they lie in the moved box.
    ys, xs = np.nonzero(mapped["image"][0].numpy() > 127)
    inside = xywha_contains(expected, np.stack([xs + 0.5, ys + 0.5], axis=1))
    assert len(xs) > 60 and inside.mean() >= 0.95


def test_flips_and_rotations_compose(image_file):
    """HFlip then a 90-degree rotation: (44, 14, -30) -> (14, 64 - 44, -30 + 90)."""
    mapped = _map(image_file, [T.HFlipTransform(W), T.RotationTransform(H, W, 90)])
    assert mapped["instances"].gt_boxes.tensor.tolist()[0] == pytest.approx([14, 20, 16, 6, 60], abs=1e-3)


def test_horizontal_and_crowd_annotations(image_file):
    """A horizontal box becomes a box of angle 0; a crowd (difficult) object is left out of training."""
    annotations = [
        {"bbox": [10, 20, 30, 8], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
        {"bbox": list(BOX), "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 1, "iscrowd": 1},
    ]
    instances = _map(image_file, [], annotations)["instances"]
    assert instances.gt_boxes.tensor.tolist() == [pytest.approx([25, 24, 30, 8, 0])]
    assert instances.gt_classes.tolist() == [0]


def test_image_without_annotations_has_no_rotated_boxes(image_file):
    mapper = RetinaDatasetMapper(is_train=True, augmentations=[], image_format="BGR", rotated=True)
    instances = mapper({"file_name": image_file, "height": H, "width": W})["instances"]
    assert isinstance(instances.gt_boxes, RotatedBoxes) and instances.gt_boxes.tensor.shape == (0, 5)


def test_augmentation_without_a_rule_is_named(image_file):
    extent = T.ExtentTransform(src_rect=(0, 0, W, H), output_size=(H, W))
    with pytest.raises(ConfigError, match="the augmentation ExtentTransform cannot move rotated boxes"):
        _map(image_file, [extent])


def test_config_chooses_the_rotated_path(small_cfg):
    assert RetinaDatasetMapper(small_cfg, is_train=True).rotated is False
    small_cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.NAME", "RotatedAnchorGenerator", "MODEL.RETINANET.BBOX_REG_WEIGHTS", (1.0, 1.0, 1.0, 1.0, 1.0)])
    assert RetinaDatasetMapper(small_cfg, is_train=True).rotated is True


def test_horizontal_model_trains_on_the_enclosing_box(image_file):
    mapper = RetinaDatasetMapper(is_train=True, augmentations=[], image_format="BGR", rotated=False)
    annotations = [{"bbox": [20, 14, 16, 6, 90], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 1}]
    instances = mapper({"file_name": image_file, "height": H, "width": W, "annotations": annotations})["instances"]
    assert instances.gt_boxes.tensor.tolist() == [pytest.approx([17, 6, 23, 22])]


def test_dataset_sanitizing_drops_bad_rotated_boxes_and_clips_none():
    annotations = [
        {"bbox": [2, 2, 20, 6, 45], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0},  # reaches out of the image: kept whole
        {"bbox": [20, 20, 0, 6, 10], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0},  # zero width
        {"bbox": [200, 20, 10, 6, 10], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0},  # outside
        {"bbox": [20, 20, float("nan"), 6, 10], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0},
        {"bbox": [-5, 10, 20, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},  # horizontal: clipped
    ]
    dicts = [{"file_name": "x.png", "height": H, "width": W, "annotations": annotations}]
    counts = sanitize_dataset_dicts(dicts, "rotated")
    assert {k: v for k, v in counts.items() if v} == {"degenerate": 1, "outside image": 1, "non-finite": 1, "clipped": 1}
    kept = dicts[0]["annotations"]
    assert [a["bbox"] for a in kept] == [[2, 2, 20, 6, 45], [0.0, 10.0, 15.0, 20.0]]
    assert [a["bbox_mode"] for a in kept] == [BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS]
