"""
The datasets a config names, ready before anything is built: the embedded shapes and rotated
shapes datasets registered (generated the first time), and every registered json dataset's files
present, its boxes of 5 numbers for a rotated model (`check_dataset_files`: every tool that reads
a config's datasets calls it).
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import ConfigError
from .coco_json import check_rotated_boxes
from .rotated_shapes import register_rotated_shapes_dataset
from .shapes import register_shapes_dataset

__all__ = ["register_config_datasets", "check_dataset_files", "check_class_names"]


def register_config_datasets(cfg):
    """Register the embedded datasets a config names (generating them the first time)."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if any(n.startswith("shapes_") and n not in DatasetCatalog.list() for n in names):
        register_shapes_dataset()
    if any(n.startswith("rotated_shapes_") and n not in DatasetCatalog.list() for n in names):
        register_rotated_shapes_dataset()


def check_dataset_files(names, *, rotated: bool = False):
    """
    Each registered json dataset's annotation file and image folder exist (Detectron2 registers
    COCO under $DETECTRON2_DATASETS without looking), or a ConfigError naming what is missing.
    For a `rotated` model (`modeling.box_transform.is_rotated(cfg)`), each json holds 5-number
    boxes only (`coco_json.check_rotated_boxes`: a DatasetError naming the file, the annotation
    and its 4-number bbox), however the dataset was registered.
    """
    for name in names:
        if name not in DatasetCatalog.list():
            raise ConfigError(f"dataset {name!r} of the config is not registered")
        metadata = MetadataCatalog.get(name)
        for attribute in ("json_file", "image_root"):
            path = metadata.get(attribute, None)
            if path and not os.path.exists(path):
                root = os.environ.get("DETECTRON2_DATASETS", "datasets")
                raise ConfigError(
                    f"dataset {name!r}: {path} not found. Detectron2 finds its built-in datasets under "
                    f"$DETECTRON2_DATASETS (now {root!r}), e.g. coco/annotations/instances_train2017.json, "
                    "coco/train2017/, coco/val2017/; set it to the folder holding them, or pass your own "
                    "data with --train-json/--train-images --test-json/--test-images"
                )
        json_file = metadata.get("json_file", None)
        if rotated and json_file:
            check_rotated_boxes(json_file)


def check_class_names(train_names, test_names, num_classes: int) -> None:
    """
    Every test dataset names the classes the model predicts: the training dataset's classes, in
    its order (when training), and at least MODEL.RETINANET.NUM_CLASSES of them. Otherwise a
    ConfigError naming both class lists, before training rather than at its final evaluation.
    """
    train_classes = _thing_classes(train_names[0]) if len(train_names) else None
    for name in test_names:
        classes = _thing_classes(name)
        if classes is None:
            continue
        if train_classes is not None and classes != train_classes:
            raise ConfigError(
                f"dataset {name!r} has classes {classes} but the training dataset {train_names[0]!r} has {train_classes}: "
                "evaluate on a dataset of the same categories (the same names, in the same order of category id)"
            )
        if len(classes) < num_classes:
            raise ConfigError(
                f"dataset {name!r} has {len(classes)} class(es) {classes} but MODEL.RETINANET.NUM_CLASSES is {num_classes}"
            )


def _thing_classes(name):
    """The class names a registered dataset's metadata holds, or None where it holds none yet."""
    if name not in DatasetCatalog.list():
        return None
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    return list(classes) if classes is not None else None

