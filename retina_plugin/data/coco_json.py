"""Register a user's COCO-format detection dataset, checking its json when it is registered."""
import json
import logging
import numbers
import os

from ..errors import UserError
from .image_sizes import image_problems, summarize_problems

logger = logging.getLogger(__name__)

__all__ = ["DatasetError", "check_image_sizes", "register_coco_json", "validate_coco_json"]


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
    lacks id, has a `bbox` that is not 4 numbers, or refers to an unknown image_id or
    category_id; image, annotation or category ids repeat. Category ids need not be 1..K.

    Returns:
        dict: the parsed json.
    """
    path = os.fspath(json_file)

    def fail(msg):
        raise DatasetError(f"Invalid COCO json {path}: {msg}")

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
        bbox = ann["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))):
            fail(f"annotations[{i}] bbox is not 4 numbers [x, y, width, height]: {_short(ann)}")
        if ann["image_id"] not in image_ids:
            fail(f"annotations[{i}] has image_id {ann['image_id']!r}, not among the images: "
                 f"{_short(ann)}")
        if ann["category_id"] not in category_ids:
            fail(f"annotations[{i}] has category_id {ann['category_id']!r}, not among the "
                 f"categories {sorted(category_ids, key=str)}: {_short(ann)}")
    return data


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
    Detectron2's DatasetCatalog and MetadataCatalog, through `register_coco_instances`
    (evaluator_type "coco"; thing_classes and the map from the json's category ids to
    contiguous ids 0..K-1 are set when the dataset is first loaded).

    The json is validated now (`validate_coco_json`), so a malformed file fails here with a
    DatasetError naming the file and entry rather than later inside data loading, and so are
    the images' sizes against the json's (`check_image_sizes`; with `skip_bad_images` a
    warning). A `name` registered before is replaced.

    Returns:
        detectron2.data.Metadata: the dataset's metadata.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    dataset = validate_coco_json(json_file)
    check_image_sizes(dataset, json_file, image_root, skip_bad_images=skip_bad_images)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, json_file, image_root)
    # The class names in category-id order, as Detectron2's loader sets them when it loads.
    categories = sorted(dataset["categories"], key=lambda c: c["id"])
    return MetadataCatalog.get(name).set(thing_classes=[c["name"] for c in categories])
