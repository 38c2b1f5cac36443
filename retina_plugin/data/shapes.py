"""
A small synthetic detection dataset, generated on the fly so that training and evaluation
need no download.

Each image is a plain background of one random, weakly saturated colour with mild pixel
noise, holding 1 to 6 filled shapes of three classes: "circle", "square" (axis aligned) and
"triangle" (equilateral, randomly rotated). Shapes have solid, saturated colours chosen at
random (so colour says nothing about the class) and contrasting with the background; each
fits inside the image and barely overlaps the others. Every box is the exact extent of the
pixels drawn for its shape, in COCO's convention (pixel i covers [i, i + 1)).

Everything comes from random generators seeded with (seed, split, image index), so the same
parameters give the same files, byte for byte, on every run.
"""
import contextlib
import json
import os
import shutil

import cv2
import numpy as np

__all__ = [
    "SHAPES_CLASSES",
    "default_shapes_root",
    "generate_shapes_dataset",
    "make_shapes_image",
    "register_shapes_dataset",
]

SHAPES_CLASSES = ("circle", "square", "triangle")
# Bump when the drawing code changes, so that existing datasets get regenerated.
SHAPES_VERSION = 1
_SPLITS = ("train", "val")

_MAX_IOU = 0.1  # reject a placement whose box has IoU > this with an earlier box ...
_MAX_COVER = 0.25  # ... or covers more than this fraction of the smaller of the two boxes
_PLACEMENT_TRIES = 50
_NOISE_STD, _NOISE_MAX = 4.0, 10  # pixel noise on the whole image, clipped to +-_NOISE_MAX
_MIN_CONTRAST = 90  # an object's colour differs from the background by >= this in a channel


def default_shapes_root():
    """
    Where the shapes dataset lives unless told otherwise: `$RETINA_PLUGIN_DATASETS` if set,
    else `$DETECTRON2_DATASETS/retina_shapes` if that is set, else `./datasets/retina_shapes`.
    """
    if os.environ.get("RETINA_PLUGIN_DATASETS"):
        return os.environ["RETINA_PLUGIN_DATASETS"]
    if os.environ.get("DETECTRON2_DATASETS"):
        return os.path.join(os.environ["DETECTRON2_DATASETS"], "retina_shapes")
    return os.path.join("datasets", "retina_shapes")


def _box_overlaps(a, b):
    """(IoU, intersection / smaller area) of two XYWH boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def _object_colour(rng, background):
    """A saturated BGR colour that differs from `background` by >= _MIN_CONTRAST somewhere."""
    while True:
        hsv = np.array([[[rng.integers(0, 180), rng.integers(180, 256), rng.integers(150, 256)]]])
        bgr = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.int64)
        if np.abs(bgr - background).max() >= _MIN_CONTRAST:
            return bgr


def _draw_mask(cls, size, x, y, angle, image_size):
    """A uint8 mask of shape `cls` of diameter/side `size` whose bounding square starts at (x, y)."""
    mask = np.zeros((image_size, image_size), np.uint8)
    r = size // 2
    if cls == "circle":
        cv2.circle(mask, (x + r, y + r), r, 1, thickness=-1, lineType=cv2.LINE_8)
    elif cls == "square":
        cv2.rectangle(mask, (x, y), (x + size - 1, y + size - 1), 1, thickness=-1)
    else:  # equilateral triangle inscribed in the circle of radius r
        angles = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        pts = np.stack([x + r + r * np.cos(angles), y + r + r * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask


def make_shapes_image(rng, image_size, min_size, max_size, max_objects):
    """Draw one image; return (BGR uint8 image, list of (class index, XYWH box, area))."""
    background = rng.integers(30, 226) + rng.integers(-20, 21, size=3)
    canvas = np.empty((image_size, image_size, 3), np.int64)
    canvas[:] = background
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(_PLACEMENT_TRIES):
            cls_idx = int(rng.integers(len(SHAPES_CLASSES)))
            size = int(rng.integers(min_size, max_size + 1))
            x, y = (int(v) for v in rng.integers(0, image_size - size + 1, size=2))
            mask = _draw_mask(SHAPES_CLASSES[cls_idx], size, x, y, rng.uniform(0, 2 * np.pi),
                              image_size)
            cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
            box = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                   int(rows[-1] - rows[0] + 1)]
            if all(iou <= _MAX_IOU and cover <= _MAX_COVER
                   for iou, cover in (_box_overlaps(box, o[1]) for o in objects)):
                break
        else:
            break  # the image is full enough
        canvas[mask.astype(bool)] = _object_colour(rng, background)
        objects.append((cls_idx, box, int(mask.sum())))
    noise = np.clip(np.round(rng.normal(0.0, _NOISE_STD, canvas.shape)), -_NOISE_MAX, _NOISE_MAX)
    image = np.clip(canvas + noise.astype(np.int64), 0, 255).astype(np.uint8)
    return image, objects


def _write_split(root, split, split_idx, num_images, params):
    """Write the PNGs of one split and its COCO json; return (#images, #annotations)."""
    image_dir = os.path.join(root, split)
    shutil.rmtree(image_dir, ignore_errors=True)  # no stale images from larger earlier runs
    os.makedirs(image_dir)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([params["seed"], split_idx, i])
        image, objects = make_shapes_image(
            rng, params["image_size"], params["min_object_size"], params["max_object_size"],
            params["max_objects"],
        )
        file_name = f"{i:06d}.png"
        if not cv2.imwrite(os.path.join(image_dir, file_name), image):
            raise OSError(f"could not write {os.path.join(image_dir, file_name)}")
        image_id = i + 1  # COCO ids start at 1 (pycocotools treats annotation id 0 as "none")
        images.append({"id": image_id, "file_name": file_name,
                       "height": params["image_size"], "width": params["image_size"]})
        for cls_idx, box, area in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cls_idx + 1, "bbox": box, "area": area,
                                "iscrowd": 0})
    coco = {
        "info": {"description": f"retina_plugin synthetic shapes, {split}",
                 "version": SHAPES_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"}
                       for k, n in enumerate(SHAPES_CLASSES)],
    }
    json_path = os.path.join(root, "annotations", f"instances_{split}.json")
    with open(json_path + ".tmp", "w") as f:
        json.dump(coco, f)
    os.replace(json_path + ".tmp", json_path)
    return len(images), len(annotations)


@contextlib.contextmanager
def _lock(root):
    """Hold an exclusive lock on `root` (POSIX only) so that concurrent callers generate once."""
    try:
        import fcntl
    except ImportError:  # Windows: no locking
        yield
        return
    with open(os.path.join(root, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_manifest(root):
    try:
        with open(os.path.join(root, "manifest.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def generate_shapes_dataset(root, num_train=600, num_val=100, image_size=256, seed=0, *,
                            min_object_size=24, max_object_size=88, max_objects=6):
    """
    Write the shapes dataset under `root`, unless it is already there with these parameters:

        root/train/000000.png ...                 root/annotations/instances_train.json
        root/val/000000.png ...                   root/annotations/instances_val.json
        root/manifest.json   (parameters, version and counts; written last)

    Annotations are COCO instances json: category ids 1..3 for SHAPES_CLASSES, boxes XYWH in
    pixels, `area` the number of pixels of the shape. A run that is killed leaves no manifest,
    so the next call regenerates.

    Args:
        root (str or path-like): output directory (created if needed).
        num_train, num_val (int): number of images in each split.
        image_size (int): side of the square images, in pixels.
        seed (int): seed of all random choices.
        min_object_size, max_object_size (int): range of a shape's diameter / side in pixels.
        max_objects (int): each image has 1..max_objects shapes (fewer when they do not fit).

    Returns:
        dict: the manifest, plus "root" and "generated" (False when nothing was written).
    """
    root = os.fspath(root)
    if not 0 < min_object_size <= max_object_size <= image_size:
        raise ValueError(f"need 0 < min_object_size ({min_object_size}) <= max_object_size "
                         f"({max_object_size}) <= image_size ({image_size})")
    if max_objects < 1 or num_train < 0 or num_val < 0:
        raise ValueError("need max_objects >= 1, num_train >= 0 and num_val >= 0")
    params = {"num_train": int(num_train), "num_val": int(num_val), "image_size": int(image_size),
              "seed": int(seed), "min_object_size": int(min_object_size),
              "max_object_size": int(max_object_size), "max_objects": int(max_objects)}
    wanted = {"version": SHAPES_VERSION, "params": params}

    def is_current(manifest):
        return (manifest is not None
                and {k: manifest.get(k) for k in wanted} == wanted
                and all(os.path.isfile(os.path.join(root, "annotations", f"instances_{s}.json"))
                        for s in _SPLITS))

    manifest = _read_manifest(root)
    if is_current(manifest):
        return dict(manifest, root=root, generated=False)
    os.makedirs(root, exist_ok=True)
    with _lock(root):
        manifest = _read_manifest(root)  # another process may have finished meanwhile
        if is_current(manifest):
            return dict(manifest, root=root, generated=False)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(root, "manifest.json"))
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        manifest = dict(wanted, classes=list(SHAPES_CLASSES), splits={})
        for split_idx, split in enumerate(_SPLITS):
            n_img, n_ann = _write_split(root, split, split_idx, params[f"num_{split}"], params)
            manifest["splits"][split] = {"num_images": n_img, "num_annotations": n_ann}
        path = os.path.join(root, "manifest.json")
        with open(path + ".tmp", "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
    return dict(manifest, root=root, generated=True)


def register_shapes_dataset(root=None, **generate_kwargs):
    """
    Generate the shapes dataset if needed (see `generate_shapes_dataset`, which takes
    `generate_kwargs`) and register its splits as "shapes_train" and "shapes_val" in
    Detectron2's DatasetCatalog / MetadataCatalog (thing_classes, evaluator_type="coco").

    A name already registered for the same json file is left alone, so calling this twice is
    fine; one registered for another file (another root) is registered again for this one.

    Args:
        root (str or path-like or None): dataset directory; None means `default_shapes_root()`.

    Returns:
        str: the absolute dataset root.
    """
    root = os.path.abspath(os.fspath(root) if root is not None else default_shapes_root())
    generate_shapes_dataset(root, **generate_kwargs)
    register_splits("shapes", root, SHAPES_CLASSES)
    return root


def register_splits(prefix: str, root: str, classes) -> None:
    """
    Register `root`'s splits (annotations/instances_<split>.json, images in <split>/) as
    "<prefix>_train" and "<prefix>_val" with `classes` as thing_classes (category ids 1..K).
    A name already registered for the same json file is left alone; one registered for another
    file (another root) is registered again for this one.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .coco_json import register_coco_boxes

    for split in _SPLITS:
        name = f"{prefix}_{split}"
        json_file = os.path.join(root, "annotations", f"instances_{split}.json")
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("json_file") == json_file:
                continue
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        metadata = {"thing_classes": list(classes), "thing_dataset_id_to_contiguous_id": {k + 1: k for k in range(len(classes))}}
        register_coco_boxes(name, metadata, json_file, os.path.join(root, split))
