"""
Training and evaluation of a LazyConfig, the loop of Detectron2's tools/lazyconfig_train_net.py,
plus: several processes on the CPU (GLOO, DDP without device ids), checkpoints with the plugin's
RetinaCheckpointer (weights-only loading, atomic writes) holding the focal loss's normaliser so
--resume continues it, a non-finite loss stopping every rank in one line without evaluation, the
last good checkpoint tagged (`retina_plugin.engine.non_finite`), and evaluation of the model made
ready as on every other path (retina_plugin.inference.model: int8, tiling, test-time augmentation
from the `inference` node).
"""
import logging
from typing import Optional

import detectron2.engine.defaults as d2_defaults
from detectron2.config import instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..inference.model import inference_model, lazy_inference_settings, load_lazy_model, unwrap, with_precision
from ..weights.checkpoint import RetinaCheckpointer
from .lazy_config import dataset_names
from .metrics_file import drop_metrics_after, metrics_path
from .non_finite import EvalAfterFinishedTraining, FiniteLosses, LastGoodCheckpoint
from .trainer import _ddp_without_device_ids, last_checkpoint, training_class_names

logger = logging.getLogger("detectron2")


class _LossNormalizerState:
    """Keeps the focal loss's normaliser (RetinaNetPlugin.loss_normalizer) in the trainer's checkpoint state."""

    def state_dict(self):
        ret = super().state_dict()
        model = unwrap(self.model)
        if hasattr(model, "loss_normalizer"):
            ret["loss_normalizer"] = model.loss_normalizer
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "loss_normalizer" in state_dict:
            unwrap(self.model).loss_normalizer = state_dict["loss_normalizer"]


class LazySimpleTrainer(_LossNormalizerState, FiniteLosses, SimpleTrainer):
    pass


class LazyAMPTrainer(_LossNormalizerState, FiniteLosses, AMPTrainer):
    pass


def do_test(cfg, model) -> Optional[dict]:
    """
    Evaluate `model` on dataloader.test with dataloader.evaluator, made ready as on every other
    path (retina_plugin.inference.model: int8 on a copy, TTA, tiling from the config's
    `inference` node); log Detectron2's tables.
    """
    if "evaluator" not in cfg.dataloader:
        return None
    settings = lazy_inference_settings(cfg)
    ready = inference_model(with_precision(model, settings, copy_first=True), settings)
    ret = inference_on_dataset(ready, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(ret)
    return ret


def _create_ddp_model(model, device: str, **kwargs):
    with _ddp_without_device_ids(device):
        return d2_defaults.create_ddp_model(model, **kwargs)


def do_train(args, cfg) -> Optional[dict]:
    """Detectron2's LazyConfig training loop; returns the results of the last evaluation."""
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = _create_ddp_model(model, cfg.train.device, **cfg.train.ddp)
    trainer = (LazyAMPTrainer if cfg.train.amp.enabled else LazySimpleTrainer)(model, train_loader, optim)
    class_names = training_class_names(dataset_names(cfg).DATASETS.TRAIN)
    checkpointer = RetinaCheckpointer(model, cfg.train.output_dir, class_names=class_names, trainer=trainer)
    results = {}

    def test_and_keep():
        results.clear()
        results.update(do_test(cfg, model) or {})
        return results

    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            EvalAfterFinishedTraining(cfg.train.eval_period, test_and_keep),
            (
                hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
                if comm.is_main_process()
                else None
            ),
            LastGoodCheckpoint(checkpointer, hint="lower optimizer.lr"),
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # The checkpoint holds the iteration that just finished: start at the next one.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    if start_iter > 0 and comm.is_main_process():
        drop_metrics_after(metrics_path(cfg.train.output_dir), start_iter - 1)
    trainer.train(start_iter, cfg.train.max_iter)
    return results


def evaluate_checkpoint(cfg, resume: bool) -> Optional[dict]:
    """--eval-only: the model of `cfg` with the last checkpoint of train.output_dir (`resume`) or train.init_checkpoint, evaluated."""
    weights = last_checkpoint(cfg.train.output_dir) if resume else None
    return do_test(cfg, load_lazy_model(cfg, weights))
