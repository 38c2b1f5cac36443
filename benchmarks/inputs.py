"""
The benchmark's inputs: its sizes, seeds and class counts, and synthetic natural-ish images
(fixed seeds, so every process and every model sees the same pixels).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

SEED = 0
INFER_SIZE = (800, 1216)  # (h, w); divisible by 32, so no model pads or resizes it
TRAIN_SIZE = (640, 853)  # padded to 640x864 by all three models
TRAIN_BATCH = 2
GT_PER_IMAGE = 8
NUM_CLASSES = {"detectron2": 80, "torchvision": 91}  # COCO: 80 classes; torchvision's 91 ids
SCORE_THRESH = 0.05
DETECTIONS_PER_IMAGE = 100
CALIBRATION_SIZE = (256, 384)  # the image the head's random weights are scaled on (models.py)


def synthetic_image(height, width, seed, num_shapes=16):
    """
    A natural-ish RGB image: a smooth random background, `num_shapes` shaded rectangles and
    ellipses, mild noise. Returns (H, W, 3) uint8 and the shapes' (num_shapes, 4) XYXY boxes,
    drawn in order (the last ones are on top).
    """
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(1, 3, 5, 7)).astype(np.float32))
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    image = image[0].permute(1, 2, 0).numpy().copy()
    boxes = []
    for i in range(num_shapes):
        w, h = rng.uniform(0.05, 0.35) * width, rng.uniform(0.05, 0.35) * height
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        xs, ys = int(x0), int(y0)
        xe, ye = int(math.ceil(x0 + w)), int(math.ceil(y0 + h))
        yy, xx = np.mgrid[ys:ye, xs:xe].astype(np.float32)
        u, v = (xx - x0) / w, (yy - y0) / h  # 0..1 inside the box
        inside = np.ones_like(u, dtype=bool) if i % 2 else (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
        colour = rng.uniform(0, 255, 3) + 50 * (u[..., None] - 0.5) * rng.uniform(-1, 1, 3)
        image[ys:ye, xs:xe][inside] = colour[inside]
        boxes.append([x0, y0, x0 + w, y0 + h])
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, dtype=np.float32)


def inference_sample():
    image, _ = synthetic_image(*INFER_SIZE, seed=SEED)
    return image


def training_samples():
    """TRAIN_BATCH (image, gt boxes, gt classes 0..79): the top GT_PER_IMAGE shapes of each."""
    samples = []
    for i in range(TRAIN_BATCH):
        image, boxes = synthetic_image(*TRAIN_SIZE, seed=SEED + 1 + i)
        classes = np.random.default_rng(SEED + 100 + i).integers(0, NUM_CLASSES["detectron2"], GT_PER_IMAGE)
        samples.append((image, boxes[-GT_PER_IMAGE:], classes))
    return samples


def bgr_tensor(image, device):
    """Detectron2's input: (3, H, W) float BGR in 0..255."""
    return torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float().to(device)


def rgb_unit_tensor(image, device):
    """torchvision's input: (3, H, W) float RGB in 0..1."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device)



def calibration_image():
    image, _ = synthetic_image(*CALIBRATION_SIZE, seed=SEED + 1000)
    return image
