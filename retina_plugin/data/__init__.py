"""
Datasets for retina_plugin: an embedded synthetic shapes dataset (no download) and a checked
registration of users' COCO-format json datasets, and the datasets a config names (`catalog`).
"""
from .catalog import check_dataset_files, register_config_datasets
from .coco_json import register_coco_json, validate_coco_json
from .shapes import (
    SHAPES_CLASSES,
    default_shapes_root,
    generate_shapes_dataset,
    register_shapes_dataset,
)

__all__ = [
    "check_dataset_files",
    "register_config_datasets",
    "SHAPES_CLASSES",
    "default_shapes_root",
    "generate_shapes_dataset",
    "register_shapes_dataset",
    "register_coco_json",
    "validate_coco_json",
]
