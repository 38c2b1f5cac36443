"""
DOTA's annotation format (Xia et al., "DOTA: A Large-scale Dataset for Object Detection in
Aerial Images", CVPR 2018), read into Detectron2 dataset dicts of rotated boxes.

A DOTA folder holds `images/P0001.png` and `labelTxt/P0001.txt`, one object a line:

    x1 y1 x2 y2 x3 y3 x4 y4 class difficult

the four corners of the object's quadrilateral in pixels (as continuous coordinates, the same
as Detectron2's), its class name and a 0/1 difficult flag (a line without the flag is not
difficult, as in the DOTA devkit). DOTA v1.0's files begin with `imagesource:...` and `gsd:...`
lines. Each quadrilateral becomes its minimum-area rectangle (`rotated_boxes.polygon_to_xywha`:
XYWHA_ABS, long side first, angle in [-90, 90)).

A difficult object is kept with "difficult": 1 and "iscrowd": 1. Detectron2 treats a crowd
annotation as a region to ignore: its mapper leaves it out of the training targets, and
COCOEvaluator counts a detection on it neither as a true nor as a false positive. That is
DOTA's rule for difficult objects in evaluation. COCO json's "ignore" cannot be used:
Detectron2's `load_coco_json` refuses it.
"""
import copy
import math
import os
from typing import Optional, Sequence

from detectron2.structures import BoxMode

from .coco_json import DatasetError
from .image_sizes import image_sizes
from .rotated_boxes import polygon_to_xywha

__all__ = ["DOTA_V1_CLASSES", "DOTAFormatError", "load_dota", "read_dota_labels", "register_dota"]

# DOTA v1.0's 15 categories, in the order of its devkit (and MMRotate's DOTADataset).
DOTA_V1_CLASSES = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle", "ship",
    "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout", "harbor",
    "swimming-pool", "helicopter",
)  # fmt: skip
_HEADERS = ("imagesource:", "gsd:")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class DOTAFormatError(DatasetError):
    """A DOTA folder or label file that cannot be read; the message names the file, the line and the value."""


def _number(token: str) -> Optional[float]:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_dota_line(line: str, classes: Sequence[str], classes_given: bool) -> tuple:
    """
    One object line -> ((4, 2) corner list, class index, difficult 0/1), or ValueError saying
    what is wrong with it (the caller adds the file and line number).
    """
    tokens = line.split()
    numbers = 0
    while numbers < len(tokens) and _number(tokens[numbers]) is not None:
        numbers += 1
    if numbers < 8:
        if len(tokens) - numbers > 2:  # a class and a flag still follow: this token is a bad coordinate
            raise ValueError(f"coordinate {numbers + 1} {tokens[numbers]!r} is not a finite number")
        raise ValueError(f"{numbers} coordinates, need 8 (x1 y1 x2 y2 x3 y3 x4 y4 class difficult)")
    if numbers > 8 or len(tokens) not in (9, 10):
        raise ValueError(f"{len(tokens)} fields, need 8 coordinates, a class and a difficult flag")
    name, flag = tokens[8], tokens[9] if len(tokens) == 10 else "0"
    if name not in classes:
        which = f"the classes given ({', '.join(classes)})" if classes_given else (
            f"DOTA v1.0's {len(classes)} classes ({', '.join(classes)}); give the dataset's classes")
        raise ValueError(f"class {name!r} is not among {which}")
    if flag not in ("0", "1"):
        raise ValueError(f"difficult flag {flag!r} is not 0 or 1")
    corners = [[float(tokens[i]), float(tokens[i + 1])] for i in range(0, 8, 2)]
    return corners, list(classes).index(name), int(flag)


def read_dota_labels(label_file: str, classes: Sequence[str] = DOTA_V1_CLASSES, *, classes_given: bool = False) -> list:
    """
    The objects of one DOTA label file as Detectron2 annotations (bbox XYWHA_ABS, category_id
    the index in `classes`, difficult and iscrowd 0/1), or a DOTAFormatError naming the file,
    the line number and the line: fewer than 8 coordinates, a non-number, an unknown class, a
    difficult flag other than 0/1, a polygon of zero area.
    """
    annotations = []
    try:
        with open(label_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DOTAFormatError(f"DOTA label file {label_file} cannot be read: {e}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.strip().lower().startswith(_HEADERS):
            continue
        try:
            corners, category, difficult = parse_dota_line(line, classes, classes_given)
            bbox = polygon_to_xywha(corners)
            if bbox[2] * bbox[3] <= 0:
                raise ValueError("the polygon has zero area")
        except ValueError as e:
            raise DOTAFormatError(f"DOTA label file {label_file} line {number}: {e}: {line.strip()!r}") from None
        annotations.append({"bbox": bbox, "bbox_mode": BoxMode.XYWHA_ABS, "category_id": category,
                            "difficult": difficult, "iscrowd": difficult})  # fmt: skip
    return annotations


def _image_of(images_dir: str, stem: str, label_file: str) -> str:
    for extension in _IMAGE_EXTENSIONS:
        for name in (stem + extension, stem + extension.upper()):
            if os.path.isfile(os.path.join(images_dir, name)):
                return os.path.join(images_dir, name)
    raise DOTAFormatError(f"DOTA label file {label_file} has no image {stem}.png (or {', '.join(_IMAGE_EXTENSIONS[1:])}) in {images_dir}")


def load_dota(dota_dir: str, classes: Optional[Sequence[str]] = None) -> list:
    """
    The Detectron2 dataset dicts of the DOTA folder `dota_dir` (`images/`, `labelTxt/`): one per
    label file, in file-name order, with the image's file_name, height and width (read from its
    header), image_id 1..N and the objects (`read_dota_labels`). `classes` defaults to
    DOTA_V1_CLASSES. A missing folder, a label file without its image or an unreadable image
    raises a DOTAFormatError naming it.
    """
    dota_dir = os.fspath(dota_dir)
    images_dir, labels_dir = os.path.join(dota_dir, "images"), os.path.join(dota_dir, "labelTxt")
    for folder in (images_dir, labels_dir):
        if not os.path.isdir(folder):
            raise DOTAFormatError(f"DOTA folder {dota_dir} has no {os.path.basename(folder)}/ (a DOTA folder holds images/ and labelTxt/)")
    label_files = sorted(n for n in os.listdir(labels_dir) if n.endswith(".txt"))
    if not label_files:
        raise DOTAFormatError(f"DOTA folder {dota_dir}: {labels_dir} holds no .txt label file")
    given = classes is not None
    classes = tuple(classes) if given else DOTA_V1_CLASSES
    records = []
    for name in label_files:
        label_file = os.path.join(labels_dir, name)
        annotations = read_dota_labels(label_file, classes, classes_given=given)
        file_name = _image_of(images_dir, os.path.splitext(name)[0], label_file)
        records.append({"file_name": file_name, "image_id": len(records) + 1, "annotations": annotations})
    sizes = image_sizes([r["file_name"] for r in records])
    for r in records:
        size = sizes[r["file_name"]]
        if isinstance(size, str):
            raise DOTAFormatError(f"DOTA image {r['file_name']} cannot be read: {size}")
        r["width"], r["height"] = size
    return records


def register_dota(name: str, dota_dir: str, classes: Optional[Sequence[str]] = None):
    """
    Read the DOTA folder `dota_dir` (`load_dota`, so any error comes now and nothing is
    registered) and register it as `name` in Detectron2's DatasetCatalog, with thing_classes
    (`classes`, default DOTA v1.0's 15) and image_root in its MetadataCatalog. A `name`
    registered before is replaced.

    Returns:
        detectron2.data.Metadata: the dataset's metadata.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    records = load_dota(dota_dir, classes)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: copy.deepcopy(records))
    thing_classes = list(classes) if classes is not None else list(DOTA_V1_CLASSES)
    return MetadataCatalog.get(name).set(
        thing_classes=thing_classes, image_root=os.path.join(os.fspath(dota_dir), "images"), evaluator_type="coco"
    )
