"""Training and evaluation with Detectron2's DefaultTrainer; tools/train_net.py is a thin shell."""
import contextlib
import functools
import os
from pathlib import Path

import detectron2.engine.defaults as d2_defaults
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import COCOEvaluator, verify_results

from .config import get_retina_plugin_cfg


class Trainer(DefaultTrainer):
    """DefaultTrainer with COCO evaluation, and multi-process training on the CPU (GLOO)."""

    def __init__(self, cfg):
        with _ddp_without_device_ids(cfg.MODEL.DEVICE):
            super().__init__(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)


@contextlib.contextmanager
def _ddp_without_device_ids(device: str):
    # Detectron2's create_ddp_model passes device_ids=[local_rank], which
    # DistributedDataParallel rejects for a module on the CPU; there it must be None.
    if not device.startswith("cpu"):
        yield
        return
    original = d2_defaults.create_ddp_model
    d2_defaults.create_ddp_model = functools.partial(original, device_ids=None)
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


def argument_parser():
    """Detectron2's default_argument_parser plus a user's own COCO-format dataset."""
    parser = default_argument_parser()
    parser.add_argument("--train-json", help="COCO-format annotation file to train on")
    parser.add_argument("--train-images", help="image folder of --train-json")
    parser.add_argument("--test-json", help="COCO-format annotation file to evaluate on")
    parser.add_argument("--test-images", help="image folder of --test-json")
    return parser


def _register_user_datasets(args, cfg):
    """Register --train-json/--test-json and point DATASETS.TRAIN/TEST and NUM_CLASSES at them."""
    from .data import register_coco_json

    opts = []
    for split, key in (("train", "DATASETS.TRAIN"), ("test", "DATASETS.TEST")):
        json_file, image_root = getattr(args, f"{split}_json"), getattr(args, f"{split}_images")
        if json_file is None and image_root is None:
            continue
        if json_file is None or image_root is None:
            raise SystemExit(f"--{split}-json and --{split}-images go together (got {json_file!r}, {image_root!r})")
        name = f"user_{split}_{Path(json_file).stem}"
        metadata = register_coco_json(name, json_file, image_root)
        opts += [key, (name,)]
        if split == "train":
            opts += ["MODEL.RETINA_PLUGIN.NUM_CLASSES", len(metadata.thing_classes)]
    cfg.merge_from_list(opts)


def register_config_datasets(cfg):
    """Register the embedded datasets a config names (generating them the first time)."""
    from .data import register_shapes_dataset

    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if any(n.startswith("shapes_") and n not in DatasetCatalog.list() for n in names):
        register_shapes_dataset()


def setup(args):
    """Config from --config-file, the dataset flags and the trailing KEY VALUE opts."""
    cfg = get_retina_plugin_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    _register_user_datasets(args, cfg)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    register_config_datasets(cfg)
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
