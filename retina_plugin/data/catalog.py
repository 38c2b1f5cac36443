"""
The datasets a config names, ready before anything is built: the embedded shapes datasets
registered (generated the first time), and every registered json dataset's files present.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import ConfigError
from .shapes import register_shapes_dataset

__all__ = ["register_config_datasets", "check_dataset_files"]


def register_config_datasets(cfg):
    """Register the embedded datasets a config names (generating them the first time)."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if any(n.startswith("shapes_") and n not in DatasetCatalog.list() for n in names):
        register_shapes_dataset()


def check_dataset_files(names):
    """
    Each registered json dataset's annotation file and image folder exist (Detectron2 registers
    COCO under $DETECTRON2_DATASETS without looking), or a ConfigError naming what is missing.
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
