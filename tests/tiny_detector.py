"""
A tiny RetinaNetPlugin for 10-20 px shapes and how the suite trains it (the session fixture
`trained` in conftest.py): used by the tiling and the int8 tests.
"""
import json
import os
import time
from types import SimpleNamespace

import cv2
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from retina_plugin import get_retina_plugin_cfg
from retina_plugin.data.shapes import generate_shapes_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A narrow RetinaNetPlugin for 10-20 px objects: a bottleneck ResNet-50 of 1/8 width (res2..res5
# 32..256 channels), FPN and GN head of 32 channels, one square anchor of 12/24 px (x3 octaves)
# on P3/P4. It trains in ~0.07 s per batch of 8 128x128 images on one CPU thread.
TINY_MODEL_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.PIXEL_STD", [57.375, 57.120, 58.395],
    "MODEL.BACKBONE.FREEZE_AT", 0,
    "MODEL.RESNETS.DEPTH", 50,
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 16,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8,
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.RETINANET.NUM_CLASSES", 1,
    "MODEL.RETINANET.IN_FEATURES", ["p3", "p4"],
    "MODEL.ANCHOR_GENERATOR.SIZES", [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in (12, 24)],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[1.0]],
    "MODEL.RETINANET.NUM_CONVS", 2,
    "MODEL.RETINANET.NORM", "GN",
    # Two boxes the model puts on one 10-20 px object, a few pixels apart, overlap with IoU
    # 0.4-0.5, which NMS at the default 0.5 keeps (on the whole image as on tiles); these
    # objects never overlap each other (IoU <= 0.1).
    "MODEL.RETINANET.NMS_THRESH_TEST", 0.4,
    "INPUT.MIN_SIZE_TEST", 128,
    "DATASETS.TRAIN", (),
    "DATASETS.TEST", (),
    "DATALOADER.NUM_WORKERS", 0,
]  # fmt: skip
TRAIN_IMAGE_SIZE, OBJECT_SIZES, TRAIN_MAX_OBJECTS = 128, (10, 20), 10
TRAIN_ITERS, BATCH, BASE_LR, WARMUP = 500, 8, 0.04, 50


def tiny_cfg():
    cfg = get_retina_plugin_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "Base-RetinaNetPlugin.yaml"))
    cfg.merge_from_list(TINY_MODEL_OPTS)
    return cfg


def load_shapes_split(root, split):
    """
    [(BGR image, (N, 4) XYXY gt boxes, (N,) gt classes)] of one split written by
    generate_shapes_dataset, every shape of class 0; also writes its COCO json with the one
    category "shape" as root/annotations/shape_{split}.json.
    """
    with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
        coco = json.load(f)
    per_image = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        a["category_id"] = 1
        per_image[a["image_id"]].append(a)
    coco["categories"] = [{"id": 1, "name": "shape", "supercategory": "shape"}]
    with open(os.path.join(root, "annotations", f"shape_{split}.json"), "w") as f:
        json.dump(coco, f)
    samples = []
    for im in coco["images"]:
        image = cv2.imread(os.path.join(root, split, im["file_name"]))
        anns = per_image[im["id"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        samples.append((image, boxes.float().reshape(-1, 4), torch.zeros(len(anns), dtype=torch.int64)))
    return samples


def train(cfg, samples, seed=0):
    """Train RetinaNetPlugin on `samples` with SGD (linear warm-up, LR / 10 for the last 20%)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=0.9, weight_decay=1e-4)
    images = [torch.from_numpy(image).permute(2, 0, 1).float() for image, _, _ in samples]
    generator = torch.Generator().manual_seed(seed)
    for it in range(TRAIN_ITERS):
        batch = []
        for i in torch.randint(len(samples), (BATCH,), generator=generator).tolist():
            instances = Instances(images[i].shape[1:], gt_boxes=Boxes(samples[i][1]), gt_classes=samples[i][2])
            batch.append({"image": images[i], "instances": instances})
        lr = BASE_LR * min(1.0, (it + 1) / WARMUP) * (0.1 if it >= 0.8 * TRAIN_ITERS else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def train_tiny_detector(root):
    """
    The tiny RetinaNetPlugin trained on 400 128x128 images of shapes written under `root`: the
    model, cfg, weights and config file, and the COCO json and image folder it trained on.
    """
    generate_shapes_dataset(
        root / "train128", num_train=400, num_val=0, image_size=TRAIN_IMAGE_SIZE, seed=0,
        min_object_size=OBJECT_SIZES[0], max_object_size=OBJECT_SIZES[1], max_objects=TRAIN_MAX_OBJECTS,
    )  # fmt: skip
    cfg = tiny_cfg()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        model = train(cfg, load_shapes_split(root / "train128", "train"))
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    print(f"\ntrained the tiny RetinaNetPlugin for {TRAIN_ITERS} iterations in {seconds:.1f}s")
    weights = str(root / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    config_file = root / "tiny.yaml"
    config_file.write_text(cfg.dump())
    return SimpleNamespace(
        cfg=cfg, model=model, weights=weights, config_file=str(config_file), seconds=seconds,
        train_json=str(root / "train128" / "annotations" / "shape_train.json"), train_images=str(root / "train128" / "train"),
    )  # fmt: skip
