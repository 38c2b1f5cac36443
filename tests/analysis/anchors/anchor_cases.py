"""
What the analysis tests share: a small config, COCO datasets written under a temporary folder,
and the anchors of the real model (the brute force the analysis is checked against).
"""
import json
import os

import cv2
import numpy as np
import torch
from detectron2.structures import ImageList

from retina_plugin import load_config
from retina_plugin.data import register_coco_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BASE_CONFIG = os.path.join(REPO_ROOT, "configs", "Base-RetinaNetPlugin.yaml")
SHAPES_CONFIG = os.path.join(REPO_ROOT, "configs", "shapes_R18_cpu.yaml")
ANCHOR_KEYS = ["MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"]  # what a suggestion sets
# ResNet-18 for a fast backbone build; images are resized to a shorter side of 256.
SMALL_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.RETINANET.NUM_CONVS", "1",
    "MODEL.RETINANET.NUM_CLASSES", "1",
    "INPUT.MIN_SIZE_TRAIN", "(256,)",
    "INPUT.MAX_SIZE_TRAIN", "512",
    "INPUT.RANDOM_FLIP", "none",
]  # fmt: skip


def analysis_cfg(*opts):
    """The base config with SMALL_OPTS and `opts`, checked as every tool loads it."""
    return load_config(BASE_CONFIG, SMALL_OPTS + list(opts))


def write_coco(root, name, images):
    """
    Write a COCO dataset under `root`: `images` is a list of (height, width, XYWH boxes); each
    image is grey with its boxes filled. Registers it as `name`; returns (json path, image dir).
    """
    image_dir = os.path.join(root, name)
    os.makedirs(image_dir, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i, (height, width, boxes) in enumerate(images):
        picture = np.full((height, width, 3), 120, np.uint8)
        for x, y, w, h in boxes:
            cv2.rectangle(picture, (int(x), int(y)), (int(x + w), int(y + h)), (40, 200, 240), -1)
        file_name = f"{i:04d}.png"
        cv2.imwrite(os.path.join(image_dir, file_name), picture)
        coco["images"].append({"id": i + 1, "file_name": file_name, "height": height, "width": width})
        for box in boxes:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": 1,
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })
    json_path = os.path.join(root, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(coco, f)
    register_coco_json(name, json_path, image_dir)
    return json_path, image_dir


def elongated_boxes(rng, count, image_size=256):
    """Thin boxes 8-14 px across and 3-5 times as long, half of them lying down."""
    boxes = []
    for _ in range(count):
        w = rng.uniform(8, 14)
        h = w * rng.uniform(3, 5)
        if rng.random() < 0.5:
            w, h = h, w
        boxes.append([rng.uniform(0, image_size - w), rng.uniform(0, image_size - h), w, h])
    return boxes


def write_datasets(root):
    """The three datasets of the tests, registered as analysis_mixed, analysis_exact, analysis_elongated."""
    rng = np.random.default_rng(0)
    # "mixed": images needing a resize (200x330 -> 256x422, padded to 256x512), boxes from
    # 3 px to most of the image, near-duplicates that compete for the same anchors, boxes on
    # the border; and one 256x256 image with exact ties: two boxes of the same IoU with the
    # square 32x32 anchor at (80, 80), and a 4x4 box halfway between anchor centres.
    mixed = []
    for _ in range(3):
        boxes = []
        for _ in range(10):
            w, h = np.exp(rng.uniform(np.log(3), np.log(180), size=2))
            boxes.append([rng.uniform(0, 330 - w), rng.uniform(0, 200 - h), w, h])
        boxes += [[b[0] + 2.5, b[1] + 1.5, b[2], b[3]] for b in boxes[:3]]
        boxes.append([0.0, 150.0, 40.0, 50.0])
        mixed.append((200, 330, boxes))
    mixed.append((256, 256, [[60.0, 64.0, 32.0, 32.0], [68.0, 64.0, 32.0, 32.0], [10.0, 200.0, 4.0, 4.0]]))
    # "exact": a box equal to the 32x32 square anchor at (80, 80) on P3, and 4x4 boxes far
    # below the smallest anchor (32 px).
    exact = [(256, 256, [[64.0, 64.0, 32.0, 32.0], [10.0, 200.0, 4.0, 4.0], [150.0, 30.0, 4.0, 4.0],
                         [203.0, 181.0, 4.0, 4.0]])]
    elongated = [(256, 256, elongated_boxes(rng, 5)) for _ in range(40)]
    return {
        "mixed": write_coco(root, "analysis_mixed", mixed),
        "exact": write_coco(root, "analysis_exact", exact),
        "elongated": write_coco(root, "analysis_elongated", elongated),
    }


def model_anchors(model, image_size):
    """The anchors RetinaNetPlugin uses for an image of `image_size`, from a real backbone pass."""
    images = ImageList.from_tensors(
        [torch.zeros(3, *image_size)], model.backbone.size_divisibility,
        padding_constraints=model.backbone.padding_constraints,
    )
    with torch.no_grad():
        features = model.backbone(images.tensor)
    return [b.tensor for b in model.anchor_generator([features[f] for f in model.head_in_features])]
