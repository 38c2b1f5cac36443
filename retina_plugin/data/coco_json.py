"""
Register a user's COCO-format detection dataset, checking its json when it is registered.

A `bbox` holds 4 numbers [x, y, width, height] (XYWH_ABS), or 5 for a rotated box
[cx, cy, w, h, angle] (XYWHA_ABS, the angle in degrees counter-clockwise; `rotated_boxes`), as
Detectron2's `convert_to_coco_json` writes them. A horizontal model trains on a rotated box's
enclosing box; a rotated model takes 5-number boxes only (`check_rotated_boxes`, which
`catalog.check_dataset_files` runs on every json dataset of a rotated config).
"""
import json
import logging
import numbers
import os

from ..errors import UserError
from .image_sizes import image_problems, summarize_problems
from .rotated_boxes import normalize_angle, rotated_box_problem

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetError",
    "check_image_sizes",
    "check_rotated_boxes",
    "load_coco_boxes",
    "register_coco_boxes",
    "register_coco_json",
    "validate_coco_json",
]


def _short(entry, limit=200):
    text = repr(entry)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class DatasetError(UserError):
    """A dataset that cannot be used (a malformed json, an empty split); the message names the file or dataset."""


def validate_coco_json(json_file):
    """
    Check that `json_file` is a COCO instances json that Detectron2's `load_coco_json` can
    read, and raise a DatasetError naming the file and the first offending entry if it is not:
    the file is missing or not json; `images`, `annotations` or `categories` is missing or not
    a list; there are no categories; a category lacks id/name; an image lacks id/file_name/height/width; an annotation
    lacks id, has a `bbox` that is not 4 or 5 numbers, a rotated
    box that is not finite or has zero width or height, or refers to an unknown image_id or
    category_id; image, annotation or category ids repeat. Category ids need not be 1..K.

    Returns:
        dict: the parsed json.
    """
    path = os.fspath(json_file)

    fail = _failure(path)
    if not os.path.isfile(path):
        fail("file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"cannot be read as json ({e})")
    if not isinstance(data, dict):
        fail(f"top level is a {type(data).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            fail(f"missing the top-level key {key!r}")
        if not isinstance(data[key], list):
            fail(f"{key!r} is a {type(data[key]).__name__}, expected a list")

    def ids_of(key, required):
        ids = set()
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                fail(f"{key}[{i}] is not an object: {_short(entry)}")
            missing = [k for k in required if k not in entry]
            if missing:
                fail(f"{key}[{i}] lacks {', '.join(missing)}: {_short(entry)}")
            if entry["id"] in ids:
                fail(f"{key}[{i}] repeats id {entry['id']!r}: {_short(entry)}")
            ids.add(entry["id"])
        return ids

    if not data["categories"]:
        fail("'categories' is empty")
    category_ids = ids_of("categories", ("id", "name"))
    image_ids = ids_of("images", ("id", "file_name", "height", "width"))
    ids_of("annotations", ("id", "image_id", "category_id", "bbox"))
    for i, ann in enumerate(data["annotations"]):
        _check_bbox(ann, i, fail)
        if ann["image_id"] not in image_ids:
            fail(f"annotations[{i}] has image_id {ann['image_id']!r}, not among the images: "
                 f"{_short(ann)}")
        if ann["category_id"] not in category_ids:
            fail(f"annotations[{i}] has category_id {ann['category_id']!r}, not among the "
                 f"categories {sorted(category_ids, key=str)}: {_short(ann)}")
    return data


def _failure(path: str):
    def fail(msg):
        raise DatasetError(f"Invalid COCO json {path}: {msg}")

    return fail


def _is_horizontal(bbox) -> bool:
    return isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))


def _check_bbox(ann: dict, i: int, fail):
    """An annotation's bbox: 4 numbers or a usable rotated box of 5."""
    bbox = ann["bbox"]
    where = f"annotations[{i}] (id {ann['id']!r})"
    if _is_horizontal(bbox):
        return
    if isinstance(bbox, (list, tuple)) and len(bbox) == 5:
        problem = rotated_box_problem(list(bbox))
        if problem is not None:
            fail(f"{where} has bbox {_short(bbox)}: {problem}")
        return
    fail(f"{where} bbox is not 4 numbers [x, y, width, height] or 5 [cx, cy, w, h, angle]: {_short(ann)}")


# The first 4-number box ((index, id, bbox), or None) of each json `register_coco_json`
# validated, by (path, size, mtime): `check_rotated_boxes` reads and validates it no second time.
_FIRST_HORIZONTAL_BOX = {}


def _file_stamp(path: str):
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


def _first_horizontal_box(data: dict):
    """(index, id, bbox) of the first annotation of a validated json whose bbox has 4 numbers, or None."""
    for i, ann in enumerate(data["annotations"]):
        if _is_horizontal(ann["bbox"]):
            return i, ann["id"], ann["bbox"]
    return None


def check_rotated_boxes(json_file) -> None:
    """
    A COCO json for a rotated model (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator):
    valid (`validate_coco_json`) and every `bbox` of 5 numbers, else a DatasetError naming the
    file, the first annotation of 4 numbers (its position and id) and its bbox. A 4-number box
    is [x, y, width, height]: taken as a turned box it would teach or score a wrong angle.
    A json `register_coco_json` validated, unchanged since, is not read again.
    """
    path = os.fspath(json_file)
    stamp = _file_stamp(path) if os.path.isfile(path) else None
    found = _FIRST_HORIZONTAL_BOX[stamp] if stamp in _FIRST_HORIZONTAL_BOX else _first_horizontal_box(validate_coco_json(path))
    if found is not None:
        i, ann_id, bbox = found
        _failure(path)(
            f"annotations[{i}] (id {ann_id!r}) has bbox {bbox}: 4 numbers [x, y, width, height], but the "
            "model is rotated (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator) and takes 5, [cx, cy, w, h, angle] (XYWHA_ABS)"
        )


def load_coco_boxes(json_file: str, image_root: str, dataset_name: str = None) -> list:
    """
    Detectron2's `load_coco_json`, with each 5-number box marked XYWHA_ABS (load_coco_json marks
    every box XYWH_ABS) and its angle normalised into [-180, 180).
    """
    from detectron2.data.datasets import load_coco_json
    from detectron2.structures import BoxMode

    dicts = load_coco_json(json_file, image_root, dataset_name)
    for d in dicts:
        for a in d.get("annotations", ()):
            if len(a["bbox"]) == 5:
                a["bbox"] = [*a["bbox"][:4], normalize_angle(a["bbox"][4])]
                a["bbox_mode"] = BoxMode.XYWHA_ABS
    return dicts


def register_coco_boxes(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Detectron2's `register_coco_instances`, loading with `load_coco_boxes` (4- or 5-number boxes)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register(name, lambda: load_coco_boxes(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)


def check_image_sizes(dataset: dict, json_file: str, image_root: str, *, skip_bad_images: bool = False):
    """
    Every image of the parsed json `dataset` has the json's width and height in its file
    (read from the header, after EXIF orientation, in parallel and cached:
    `image_sizes.image_sizes`), or a DatasetError naming the first that does not, with the
    json's size and the file's. With `skip_bad_images` they are counted in one warning instead,
    and the training loader drops them. Missing or unreadable files are left to the loader,
    which skips them under DATALOADER.SKIP_UNREADABLE_IMAGES.
    """
    dicts = [{"file_name": os.path.join(image_root, im["file_name"]), "width": im["width"], "height": im["height"]}
             for im in dataset["images"]]  # fmt: skip
    problems = [p for p in image_problems(dicts, json_file=json_file) if p.kind == "size"]
    if not problems:
        return
    summary = summarize_problems(problems, len(dicts))
    if not skip_bad_images:
        raise DatasetError(f"{json_file}: {summary}")
    logger.warning(f"{json_file}: {summary}; the training loader skips them")


def register_coco_json(name, json_file, image_root, *, skip_bad_images=False):
    """
    Register the COCO-format dataset `json_file` (images under `image_root`) as `name` in
    Detectron2's DatasetCatalog and MetadataCatalog, as `register_coco_instances` does
    (`register_coco_boxes`: evaluator_type "coco"; thing_classes and the map from the json's
    category ids to contiguous ids 0..K-1 are set when the dataset is first loaded; 5-number
    boxes XYWHA_ABS).

    The json is validated now (`validate_coco_json`), so a malformed file fails here with a
    DatasetError naming the file and entry rather than later inside data loading, and so are
    the images' sizes against the json's (`check_image_sizes`; with `skip_bad_images` a
    warning). A `name` registered before is replaced.

    Returns:
        detectron2.data.Metadata: the dataset's metadata.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    stamp = _file_stamp(json_file) if os.path.isfile(json_file) else None
    dataset = validate_coco_json(json_file)
    check_image_sizes(dataset, json_file, image_root, skip_bad_images=skip_bad_images)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    register_coco_boxes(name, {}, json_file, image_root)
    _FIRST_HORIZONTAL_BOX[stamp] = _first_horizontal_box(dataset)
    # The class names in category-id order, as Detectron2's loader sets them when it loads.
    categories = sorted(dataset["categories"], key=lambda c: c["id"])
    return MetadataCatalog.get(name).set(thing_classes=[c["name"] for c in categories])
