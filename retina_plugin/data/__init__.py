"""
Datasets for retina_plugin: embedded synthetic datasets (no download: shapes, and rotated
shapes with XYWHA boxes), checked registrations of users' COCO-format json datasets and DOTA
folders, and the datasets a config names (`catalog`).
"""
from .catalog import check_dataset_files, register_config_datasets
from .coco_json import register_coco_json, validate_coco_json
from .dota import DOTA_V1_CLASSES, register_dota
from .rotated_shapes import ROTATED_SHAPES_CLASSES, generate_rotated_shapes_dataset, register_rotated_shapes_dataset
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
    "DOTA_V1_CLASSES",
    "register_dota",
    "ROTATED_SHAPES_CLASSES",
    "generate_rotated_shapes_dataset",
    "register_rotated_shapes_dataset",
]
