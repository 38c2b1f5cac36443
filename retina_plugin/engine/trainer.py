"""Training and evaluation with Detectron2's DefaultTrainer (what tools/train_net.py runs, through retina_plugin.cli.train_net)."""
import contextlib
import functools
import logging
import os
import weakref
from collections import OrderedDict

import detectron2.engine.defaults as d2_defaults
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer
from detectron2.utils import comm

from ..data.loader import build_resumable_train_loader
from ..data.mapper import RetinaDatasetMapper
from ..inference.evaluation import build_evaluator, build_test_loader
from ..inference.model import InferenceSettings, inference_model, unwrap, with_precision
from ..inference.tiling_checks import check_tiled_evaluation
from ..weights.checkpoint import RetinaCheckpointer
from .metrics_file import drop_metrics_after, metrics_path
from .non_finite import EvalAfterFinishedTraining, FiniteLosses, LastGoodCheckpoint
from .throughput import TimedInference


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with COCO evaluation, multi-process training on the CPU (GLOO), loaders
    that report bad input (`retina_plugin.data.loader`), and exact resumption: checkpoints are
    written atomically, hold the focal loss's normaliser, and a resumed run continues the
    data stream where the checkpoint left it, its metrics.json cut to the checkpoint's iteration.
    A loss that goes non-finite stops every rank in one line, without evaluation, the last good
    checkpoint tagged (`retina_plugin.engine.non_finite`).
    """

    def __init__(self, cfg):
        with _ddp_without_device_ids(cfg.MODEL.DEVICE):
            super().__init__(cfg)
        inner = self._trainer  # DefaultTrainer.__init__ built Detectron2's own
        self._trainer = (_FiniteAMPTrainer if isinstance(inner, AMPTrainer) else _FiniteSimpleTrainer)(
            inner.model, inner.data_loader, inner.optimizer
        )

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer just before calling this.
        self.checkpointer = RetinaCheckpointer(
            self._trainer.model, self.cfg.OUTPUT_DIR, class_names=training_class_names(self.cfg.DATASETS.TRAIN),
            trainer=weakref.proxy(self),
        )  # fmt: skip
        hint = "lower SOLVER.BASE_LR or clip gradients (SOLVER.CLIP_GRADIENTS.ENABLED True)"
        if not self.cfg.MODEL.WEIGHTS and self.cfg.MODEL.RESNETS.NORM == "FrozenBN":
            hint += "; from random init the backbone needs a trainable norm (MODEL.RESNETS.NORM BN or GN, MODEL.BACKBONE.FREEZE_AT 0)"
        return EvalAfterFinishedTraining.replacing(super().build_hooks()) + [LastGoodCheckpoint(self.checkpointer, hint)]

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        self._trainer.data_loader.start_iter = self.start_iter
        if self.start_iter > 0 and comm.is_main_process():
            drop_metrics_after(metrics_path(self.cfg.OUTPUT_DIR), self.start_iter - 1)

    def state_dict(self):
        ret = super().state_dict()
        ret["loss_normalizer"] = unwrap(self._trainer.model).loss_normalizer
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "loss_normalizer" in state_dict:
            unwrap(self._trainer.model).loss_normalizer = state_dict["loss_normalizer"]

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg, RetinaDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # The model made ready for use as on every other path (retina_plugin.inference.model):
        # int8 on a copy (the model may still be training), tiled with TILE_SIZE > 0 (needs
        # INPUT.MIN_SIZE_TEST 0). With TEST.AUG.ENABLED, then again with test-time augmentation
        # into OUTPUT_DIR/inference_TTA/<dataset>, its results under the plain ones' keys + "_TTA",
        # as Detectron2's tools/train_net.py test_with_TTA does for R-CNN.
        if not len(cfg.DATASETS.TEST):
            return OrderedDict()  # nothing to evaluate (Detectron2's EvalHook still calls test)
        check_tiled_evaluation(cfg)
        settings = InferenceSettings.from_config(cfg)
        model = with_precision(model, settings, copy_first=True)
        timed = TimedInference(inference_model(model, settings, tta=False))
        results = super().test(cfg, timed, evaluators)
        if comm.is_main_process():
            timed.report(cfg.DATASETS.TEST, os.path.join(cfg.OUTPUT_DIR, "inference"))
        if settings.tta:
            results.update(cls._test_with_tta(cfg, model, settings))
        return results

    @classmethod
    def _test_with_tta(cls, cfg, model, settings):
        tta_cfg = cfg.clone()
        tta_cfg.defrost()
        # The loader hands over the images at their own size: each version is resized from it
        # (Detectron2 resizes an image already resized to MIN_SIZE_TEST once more).
        tta_cfg.INPUT.MIN_SIZE_TEST = 0
        logging.getLogger(__name__).info("Running inference with test-time augmentation ...")
        evaluators = [
            cls.build_evaluator(tta_cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        results = super().test(tta_cfg, inference_model(model, settings, tta=True), evaluators)
        return OrderedDict((f"{key}_TTA", value) for key, value in results.items())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)


class _FiniteSimpleTrainer(FiniteLosses, SimpleTrainer):
    pass


class _FiniteAMPTrainer(FiniteLosses, AMPTrainer):
    pass


def training_class_names(dataset_names):
    """The class names of the first training dataset (its metadata's thing_classes), or None."""
    if not len(dataset_names):
        return None
    return MetadataCatalog.get(dataset_names[0]).get("thing_classes", None)


def last_checkpoint(output_dir: str):
    """The checkpoint `last_checkpoint` of `output_dir` names, or None (then MODEL.WEIGHTS is loaded)."""
    checkpointer = RetinaCheckpointer(None, save_dir=output_dir)
    return checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None


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
