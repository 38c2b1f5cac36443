"""Training and evaluation with Detectron2's DefaultTrainer; tools/train_net.py is a thin shell."""
import contextlib
import copy
import functools
import logging
import os
import weakref
from collections import OrderedDict

import detectron2.engine.defaults as d2_defaults
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer, default_setup, launch
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing.spawn import ProcessRaisedException

from ..config import ConfigError, load_config
from ..data.loader import build_resumable_train_loader, load_dataset_dicts
from ..data.mapper import ImageReadError, RetinaDatasetMapper
from ..deploy.quantization import apply_int8_config
from ..inference.tiling import build_tiled_model, check_tiled_evaluation
from ..inference.tta import RetinaNetWithTTA
from .arguments import (
    check_dataset_files,
    check_device,
    one_line_errors,
    register_config_datasets,
    user_dataset_opts,
)
from .checkpoint import RetinaCheckpointer
from .throughput import TimedInference


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with COCO evaluation, multi-process training on the CPU (GLOO), loaders
    that report bad input (`retina_plugin.data.loader`), and exact resumption: checkpoints are
    written atomically, hold the focal loss's normaliser, and a resumed run continues the
    data stream where the checkpoint left it.
    """

    def __init__(self, cfg):
        with _ddp_without_device_ids(cfg.MODEL.DEVICE):
            super().__init__(cfg)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer just before calling this.
        self.checkpointer = RetinaCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        return super().build_hooks()

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        self._trainer.data_loader.start_iter = self.start_iter

    def state_dict(self):
        ret = super().state_dict()
        ret["loss_normalizer"] = _unwrap(self._trainer.model).loss_normalizer
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "loss_normalizer" in state_dict:
            _unwrap(self._trainer.model).loss_normalizer = state_dict["loss_normalizer"]

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            load_dataset_dicts([dataset_name]),
            mapper=RetinaDatasetMapper(cfg, is_train=False, dataset_name=dataset_name),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # With MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8, an int8 copy (the model may still be
        # training); with TILE_SIZE > 0, tile by tile at native resolution (retina_plugin.inference.tiling;
        # needs INPUT.MIN_SIZE_TEST 0). With TEST.AUG.ENABLED, then again with test-time augmentation
        # (retina_plugin.inference.tta) into OUTPUT_DIR/inference_TTA/<dataset>, its results under the
        # plain ones' keys + "_TTA", as Detectron2's tools/train_net.py test_with_TTA does for R-CNN.
        if not len(cfg.DATASETS.TEST):
            return OrderedDict()  # nothing to evaluate (Detectron2's EvalHook still calls test)
        if cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE == "int8":
            model = apply_int8_config(cfg, copy.deepcopy(_unwrap(model)).eval())
        timed = TimedInference(build_tiled_model(cfg, model))
        results = super().test(cfg, timed, evaluators)
        if comm.is_main_process():
            timed.report(cfg.DATASETS.TEST, os.path.join(cfg.OUTPUT_DIR, "inference"))
        if cfg.TEST.AUG.ENABLED:
            results.update(cls._test_with_tta(cfg, model))
        return results

    @classmethod
    def _test_with_tta(cls, cfg, model):
        tta_cfg = cfg.clone()
        tta_cfg.defrost()
        # The loader hands over the images at their own size: each version is resized from it
        # (Detectron2 resizes an image already resized to MIN_SIZE_TEST once more).
        tta_cfg.INPUT.MIN_SIZE_TEST = 0
        tta = RetinaNetWithTTA(tta_cfg, _unwrap(model))
        logging.getLogger(__name__).info(f"Running inference with {tta.describe()} ...")
        evaluators = [
            cls.build_evaluator(tta_cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        results = super().test(tta_cfg, build_tiled_model(tta_cfg, tta), evaluators)
        return OrderedDict((f"{key}_TTA", value) for key, value in results.items())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # The tiles of a raster dataset change with TILE_SIZE and the vectors: its COCO json,
        # converted from the tiles, must not be the one cached by an earlier run.
        generated = MetadataCatalog.get(dataset_name).get("raster", None) is not None
        return COCOEvaluator(
            dataset_name, output_dir=output_folder, max_dets_per_image=evaluation_max_detections(cfg),
            allow_cached_coco=not generated,
        )  # fmt: skip


# COCOeval needs a number: with tiling and no cap of the whole image, one no image reaches.
UNCAPPED_TILED_DETECTIONS = 10**6


def evaluation_max_detections(cfg):
    """
    COCOEvaluator's max_dets_per_image: COCO's 100 (None), or with tiled evaluation the whole
    image's cap (MODEL.RETINA_PLUGIN.TILED_DETECTIONS_PER_IMAGE), so a large image's
    detections are not cut to 100 before they are scored.
    """
    node = cfg.MODEL.RETINA_PLUGIN
    if node.TILE_SIZE == 0:
        return None
    return node.TILED_DETECTIONS_PER_IMAGE or UNCAPPED_TILED_DETECTIONS


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


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


def checked_config(args):
    """
    The config of --config-file, the dataset flags and the trailing KEY VALUE opts, checked
    before anything is built or launched: an unknown key, a wrong type or an out-of-range value,
    a CUDA device the machine lacks, or a dataset whose files are not there raises ConfigError
    saying what to do.
    """
    try:
        cfg = load_config(args.config_file, user_dataset_opts(args) + list(args.opts))
        if len(cfg.DATASETS.TEST):
            check_tiled_evaluation(cfg)  # before training, not when evaluating after it
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE == "int8" and not args.eval_only:
        raise ConfigError(
            "MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8 is for --eval-only: its calibration belongs to one set of "
            "weights; train in float32, then calibrate the trained weights with tools/calibrate_int8.py"
        )
    check_device(cfg.MODEL.DEVICE, args.num_gpus)
    register_config_datasets(cfg)
    check_dataset_files(list(cfg.DATASETS.TEST) + ([] if args.eval_only else list(cfg.DATASETS.TRAIN)))
    return cfg


def launch_main(args, prog: str = "train_net"):
    """
    `main` in `args.num_gpus` processes (Detectron2's launch), after the config was checked in
    this one; bad input (config, device, dataset files, an unreadable image) exits with one line.
    """
    with one_line_errors(prog, (ConfigError, ImageReadError)):
        if args.num_gpus * args.num_machines > 1:
            checked_config(args)  # here, before any process starts; in one process main checks it
        try:
            return launch(
                main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                dist_url=args.dist_url, args=(args,),
            )
        except ProcessRaisedException as e:  # a worker process stopped on bad input: its last line
            last = str(e).strip().splitlines()[-1]
            name, _, message = last.partition(": ")
            if name.rsplit(".", 1)[-1] in (ConfigError.__name__, ImageReadError.__name__):
                raise ConfigError(message) from None
            raise


def setup(args):
    """The checked config (see `checked_config`), frozen, with Detectron2's default_setup and logging."""
    cfg = checked_config(args)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup logs "detectron2" and "fvcore"; the plugin's own messages (dropped boxes,
    # skipped images, checkpoint and int8 notes) go to the same console and log.txt.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="retina_plugin", abbrev_name="retina")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        RetinaCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
