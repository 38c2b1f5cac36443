"""
A small synthetic dataset of long, turned objects seen from above, generated on the fly like
`shapes` (no download), with rotated ground truth: "ship" (a long thin hull with a pointed bow
and a deckhouse) and "car" (a short box with dark windscreen and rear-window bands).

Each image is a textured background (a weakly saturated colour with smooth, blotchy variation
and mild pixel noise) holding one to a few groups: a ship or two or three moored side by side,
a car or a row of two to four parked side by side, each group at one angle. Near 45 degrees the
enclosing horizontal boxes of two moored ships overlap by IoU > 0.5, where horizontal NMS keeps
one of them; a turned car fills less than half of its enclosing box. Every object is turned by a
random angle, lies wholly in the image and touches no other.

An object is a convex polygon; its pixels are those whose centre (i + 0.5, j + 0.5) lies
inside it. Its box is the rectangle the polygon was built in, as XYWHA named by `le90` (the
long side first, the angle in [-90, 90)), so every drawn pixel lies in its box. Everything comes
from random generators seeded with (seed, split, image index): the same parameters give the
same files, byte for byte.
"""
import contextlib
import json
import math
import os
import shutil

import cv2
import numpy as np

from .rotated_boxes import le90
from .shapes import _NOISE_MAX, _NOISE_STD, _lock, _object_colour, _read_manifest, default_shapes_root, register_splits

__all__ = [
    "ROTATED_SHAPES_CLASSES",
    "default_rotated_shapes_root",
    "generate_rotated_shapes_dataset",
    "make_rotated_shapes_image",
    "register_rotated_shapes_dataset",
]

ROTATED_SHAPES_CLASSES = ("ship", "car")
# Bump when the drawing code changes, so that existing datasets get regenerated.
ROTATED_SHAPES_VERSION = 1
_SPLITS = ("train", "val")
_PLACEMENT_TRIES = 40
_GAP = 2  # pixels kept free around every object
# Per class: length range in px, width / length, (min, max) objects side by side in a group.
_SHIP = {"length": (44, 100), "width": 0.15, "group": (1, 3), "spacing": (2, 5)}
_CAR = {"length": (18, 28), "width": 0.45, "group": (1, 4), "spacing": (2, 4)}


def default_rotated_shapes_root():
    """The folder `rotated` inside `shapes.default_shapes_root()` (which honours $RETINA_PLUGIN_DATASETS, $DETECTRON2_DATASETS)."""
    return os.path.join(default_shapes_root(), "rotated")


def _to_image(local, box):
    """Local polygon points (u along the length, v across) -> pixel coordinates of the box (cx, cy, a)."""
    cx, cy, a = box[0], box[1], math.radians(box[4])
    c, s = math.cos(a), math.sin(a)
    u, v = np.asarray(local, dtype=np.float64).T
    return np.stack([cx + c * u + s * v, cy - s * u + c * v], axis=1)


def _ship_parts(length, width):
    """(hull, deckhouse) local polygons: a hull of `length` x `width` with a pointed bow at +u."""
    half_l, half_w, bow = length / 2, width / 2, 1.3 * width
    hull = [(-half_l, -half_w), (half_l - bow, -half_w), (half_l, 0.0), (half_l - bow, half_w), (-half_l, half_w)]
    x0, x1 = -half_l + 0.12 * length, -half_l + 0.32 * length
    house = [(x0, -half_w / 2), (x1, -half_w / 2), (x1, half_w / 2), (x0, half_w / 2)]
    return hull, [house]


def _car_parts(length, width):
    """(body, windows) local polygons: a rectangle with a windscreen band and a rear-window band."""
    half_l, half_w, inset = length / 2, width / 2, 0.15 * width
    body = [(-half_l, -half_w), (half_l, -half_w), (half_l, half_w), (-half_l, half_w)]
    bands = [(0.12, 0.30), (-0.36, -0.26)]
    windows = [[(a * length, -half_w + inset), (b * length, -half_w + inset), (b * length, half_w - inset), (a * length, half_w - inset)]
               for a, b in bands]  # fmt: skip
    return body, windows


def _convex_mask(polygon, image_size):
    """(H, W) bool: the pixels whose centre lies inside (or on) the convex `polygon` ((K, 2) pixel coordinates)."""
    mask = np.zeros((image_size, image_size), bool)
    x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int), image_size)
    if x1 <= x0 or y1 <= y0:
        return mask
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    p, q = polygon, np.roll(polygon, -1, axis=0)
    orientation = np.sign(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]))
    cross = (q[:, 0] - p[:, 0])[:, None, None] * (ys - p[:, 1, None, None]) - (q[:, 1] - p[:, 1])[:, None, None] * (xs - p[:, 0, None, None])
    mask[y0:y1, x0:x1] = (cross * orientation >= 0).all(axis=0)
    return mask


def _textured_background(rng, image_size):
    """(H, W, 3) int64: a random base colour with smooth blotches at two scales."""
    base = rng.integers(30, 226) + rng.integers(-20, 21, size=3)
    texture = np.zeros((image_size, image_size))
    for cells, amplitude in ((4, 18.0), (16, 8.0)):
        coarse = rng.normal(0.0, amplitude, (cells, cells)).astype(np.float32)
        texture += cv2.resize(coarse, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(0.7, 1.0, size=3)
    return base, base + np.round(texture[:, :, None] * tint).astype(np.int64)


def _group(rng, spec):
    """One group: (number side by side, length, width, spacing between neighbours' centres)."""
    count = int(rng.integers(spec["group"][0], spec["group"][1] + 1))
    length = float(rng.uniform(*spec["length"]))
    width = length * spec["width"]
    return count, length, width, width + float(rng.uniform(*spec["spacing"]))


def _place_group(rng, cls_idx, image_size, occupied):
    """The group's objects as (class index, XYWHA box, local parts), placed where nothing else is, or None."""
    spec = (_SHIP, _CAR)[cls_idx]
    count, length, width, spacing = _group(rng, spec)
    parts = (_ship_parts, _car_parts)[cls_idx](length, width)
    angle = float(rng.uniform(-180.0, 180.0))
    across = np.array([math.sin(math.radians(angle)), math.cos(math.radians(angle))])  # the v axis
    for _ in range(_PLACEMENT_TRIES):
        centre = rng.uniform(0, image_size, size=2)
        boxes = [(*(centre + (k - (count - 1) / 2) * spacing * across), length, width, angle) for k in range(count)]
        outlines = [_to_image(parts[0], box) for box in boxes]
        if any(o.min() < 1 or o.max() > image_size - 1 for o in outlines):
            continue
        masks = [_convex_mask(o, image_size) for o in outlines]
        if not any((m & occupied).any() for m in masks):
            return [(cls_idx, box, parts, mask) for box, mask in zip(boxes, masks)]
    return None


def make_rotated_shapes_image(rng, image_size, max_groups=4):
    """
    Draw one image. Returns (BGR uint8 (H, W, 3) image, objects): each object a
    (class index, XYWHA box [cx, cy, w, h, angle] by `le90`, (H, W) bool mask of its pixels).
    """
    background, canvas = _textured_background(rng, image_size)
    occupied = np.zeros((image_size, image_size), bool)
    objects = []
    for _ in range(int(rng.integers(1, max_groups + 1))):
        group = _place_group(rng, int(rng.integers(len(ROTATED_SHAPES_CLASSES))), image_size, occupied)
        if group is None:
            continue
        colour = _object_colour(rng, background)
        for cls_idx, box, parts, mask in group:
            canvas[mask] = colour
            for detail in parts[1]:
                canvas[_convex_mask(_to_image(detail, box), image_size) & mask] = colour * 35 // 100
            occupied |= cv2.dilate(mask.astype(np.uint8), np.ones((2 * _GAP + 1,) * 2, np.uint8)).astype(bool)
            objects.append((cls_idx, le90(box), mask))
    noise = np.clip(np.round(rng.normal(0.0, _NOISE_STD, canvas.shape)), -_NOISE_MAX, _NOISE_MAX)
    image = np.clip(canvas + noise.astype(np.int64), 0, 255).astype(np.uint8)
    return image, objects


def _write_split(root, split, split_idx, params):
    """Write the PNGs of one split and its COCO json (5-number XYWHA boxes); return (#images, #annotations)."""
    image_dir = os.path.join(root, split)
    shutil.rmtree(image_dir, ignore_errors=True)
    os.makedirs(image_dir)
    images, annotations = [], []
    size = params["image_size"]
    for i in range(params[f"num_{split}"]):
        image, objects = make_rotated_shapes_image(np.random.default_rng([params["seed"], split_idx, i]), size, params["max_groups"])
        file_name = f"{i:06d}.png"
        if not cv2.imwrite(os.path.join(image_dir, file_name), image):
            raise OSError(f"could not write {os.path.join(image_dir, file_name)}")
        images.append({"id": i + 1, "file_name": file_name, "height": size, "width": size})
        for cls_idx, box, mask in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls_idx + 1,
                                "bbox": [round(v, 3) for v in box], "area": int(mask.sum()), "iscrowd": 0})  # fmt: skip
    coco = {
        "info": {"description": f"retina_plugin synthetic rotated shapes, {split}", "version": ROTATED_SHAPES_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "vehicle"} for k, n in enumerate(ROTATED_SHAPES_CLASSES)],
    }
    json_path = os.path.join(root, "annotations", f"instances_{split}.json")
    with open(json_path + ".tmp", "w") as f:
        json.dump(coco, f)
    os.replace(json_path + ".tmp", json_path)
    return len(images), len(annotations)


def generate_rotated_shapes_dataset(root, num_train=600, num_val=100, image_size=256, seed=0, *, max_groups=4):
    """
    Write the rotated shapes dataset under `root`, unless it is already there with these
    parameters: `root/{train,val}/000000.png ...`, `root/annotations/instances_{train,val}.json`
    (COCO json, category ids 1..2 for ROTATED_SHAPES_CLASSES, `bbox` [cx, cy, w, h, angle] XYWHA,
    `area` the object's pixel count) and `root/manifest.json`, written last under a lock (as
    `shapes.generate_shapes_dataset`), so a killed run regenerates.

    Args:
        num_train, num_val (int): number of images in each split.
        image_size (int): side of the square images, in pixels (>= 128: a ship is up to 100 px long).
        seed (int): seed of all random choices.
        max_groups (int): each image has 1..max_groups groups of objects (fewer when they do not fit).

    Returns:
        dict: the manifest, plus "root" and "generated" (False when nothing was written).
    """
    root = os.fspath(root)
    if image_size < 128 or max_groups < 1 or num_train < 0 or num_val < 0:
        raise ValueError("need image_size >= 128, max_groups >= 1, num_train >= 0 and num_val >= 0")
    params = {"num_train": int(num_train), "num_val": int(num_val), "image_size": int(image_size), "seed": int(seed),
              "max_groups": int(max_groups)}  # fmt: skip
    wanted = {"version": ROTATED_SHAPES_VERSION, "params": params}

    def is_current(manifest):
        return (manifest is not None and {k: manifest.get(k) for k in wanted} == wanted
                and all(os.path.isfile(os.path.join(root, "annotations", f"instances_{s}.json")) for s in _SPLITS))  # fmt: skip

    if is_current(_read_manifest(root)):
        return dict(_read_manifest(root), root=root, generated=False)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with _lock(root):
        manifest = _read_manifest(root)  # another process may have finished meanwhile
        if is_current(manifest):
            return dict(manifest, root=root, generated=False)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(root, "manifest.json"))
        manifest = dict(wanted, classes=list(ROTATED_SHAPES_CLASSES), splits={})
        for split_idx, split in enumerate(_SPLITS):
            n_img, n_ann = _write_split(root, split, split_idx, params)
            manifest["splits"][split] = {"num_images": n_img, "num_annotations": n_ann}
        path = os.path.join(root, "manifest.json")
        with open(path + ".tmp", "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
    return dict(manifest, root=root, generated=True)


def register_rotated_shapes_dataset(root=None, **generate_kwargs):
    """
    Generate the rotated shapes dataset if needed (`generate_rotated_shapes_dataset`, which takes
    `generate_kwargs`) and register its splits as "rotated_shapes_train" and "rotated_shapes_val"
    in Detectron2's DatasetCatalog / MetadataCatalog (thing_classes, evaluator_type "coco"; boxes
    XYWHA_ABS). A name already registered for the same json file is left alone.

    Args:
        root (str or path-like or None): dataset directory; None means `default_rotated_shapes_root()`.

    Returns:
        str: the absolute dataset root.
    """
    root = os.path.abspath(os.fspath(root) if root is not None else default_rotated_shapes_root())
    generate_rotated_shapes_dataset(root, **generate_kwargs)
    register_splits("rotated_shapes", root, ROTATED_SHAPES_CLASSES)
    return root
