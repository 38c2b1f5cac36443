"""
The training workflow: Detectron2's DefaultTrainer with COCO evaluation (`trainer`), the
LazyConfig trainer (`lazy`), the checkpointer (`checkpoint`), the metrics plot (`plot`) and
what every tool's command line shares (`arguments`).
"""
from .checkpoint import RetinaCheckpointer, UnsafeCheckpointError
from .arguments import (
    OneLineParser,
    add_dataset_arguments,
    add_opts_argument,
    argument_parser,
    one_line_errors,
    register_config_datasets,
    user_dataset_opts,
)
from .trainer import Trainer, launch_main, main, setup

__all__ = [
    "RetinaCheckpointer",
    "UnsafeCheckpointError",
    "OneLineParser",
    "add_dataset_arguments",
    "add_opts_argument",
    "argument_parser",
    "one_line_errors",
    "register_config_datasets",
    "user_dataset_opts",
    "Trainer",
    "launch_main",
    "main",
    "setup",
]
