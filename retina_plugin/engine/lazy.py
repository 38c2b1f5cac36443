"""
Training and evaluation from Detectron2 LazyConfig (Python) configs, e.g. configs/retinanet_R50.py
and configs/shapes_R18_cpu.py: the logic of Detectron2's tools/lazyconfig_train_net.py, of which
the plugin's tools/lazyconfig_train_net.py is a thin shell.

    python tools/lazyconfig_train_net.py --config-file configs/shapes_R18_cpu.py [--num-gpus N]
        [--eval-only] [--resume] [--train-json ... --train-images ... --test-json ... --test-images ...]
        [KEY=VALUE ...]

A config holds `model`, `dataloader.{train,test,evaluator}`, `optimizer`, `lr_multiplier` and
`train` (Detectron2's configs/common/train.py keys), each instantiated with
`detectron2.config.instantiate`. Beyond Detectron2's script, this one

- checks the config before anything is built or launched: a missing or broken file, a config
  lacking a part, or a KEY=VALUE override naming no key of the config (or no argument of the
  object it configures) or giving a string where a number or bool is, and a model that its
  constructors refuse (it is built once on the CPU before launch), end with one line
  `lazyconfig_train_net: error: ...` and exit status 2;
- registers the embedded shapes datasets when the config names them (generated on first use),
  and a user's COCO-format json with --train-json/--test-json as tools/train_net.py does;
- runs several processes on the CPU (`--num-gpus N` with train.device "cpu": GLOO, DDP without
  device ids);
- checkpoints with the plugin's RetinaCheckpointer (Detectron2's DetectionCheckpointer with
  weights-only loading and atomic writes), the focal loss's normaliser included, so --resume
  continues it.
"""
import argparse
import inspect
import logging
import os
import sys
from types import SimpleNamespace
from typing import List, Optional

import detectron2.engine.defaults as d2_defaults
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_argument_parser, default_setup, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config import ConfigError
from .arguments import add_dataset_arguments, register_config_datasets, user_dataset_opts
from .checkpoint import RetinaCheckpointer
from .trainer import _ddp_without_device_ids, _unwrap

PROG = "lazyconfig_train_net"
logger = logging.getLogger("detectron2")

# The parts of a config that training instantiates; evaluation needs model, train, dataloader.test.
TRAINING_KEYS = ("model", "dataloader", "optimizer", "lr_multiplier", "train")
EVALUATION_KEYS = ("model", "dataloader", "train")


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's default_argument_parser (opts as KEY=VALUE overrides) plus --train-json & co."""
    parser = default_argument_parser(
        epilog="Overrides are KEY=VALUE in Detectron2's LazyConfig syntax, e.g. train.max_iter=100 "
        "dataloader.train.total_batch_size=4 model.head.num_convs=2 "
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128]"
    )
    parser.prog = PROG
    return add_dataset_arguments(parser)


# ---------------------------------------------------------------- config loading and checks


def load_lazy_config(config_file: str, overrides: List[str] = (), *, eval_only: bool = False, args=None):
    """
    `config_file` (a LazyConfig .py or .yaml) with the --train-json/--test-json datasets of `args`
    (registered) and then `overrides` applied, checked as the module docstring says.
    Raises ConfigError naming the file, the override and the key.
    """
    if not config_file:
        raise ConfigError("--config-file is required")
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file not found: {config_file}")
    if os.path.splitext(config_file)[1] not in (".py", ".yaml", ".yml"):
        raise ConfigError(f"config file {config_file}: a LazyConfig is a .py (or .yaml) file; for the YAML configs use tools/train_net.py")
    try:
        cfg = LazyConfig.load(config_file)
    except Exception as e:  # SyntaxError, ImportError, anything its code raises
        raise ConfigError(f"config file {config_file}: {type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config file {config_file}: holds no config")
    needed = EVALUATION_KEYS if eval_only else TRAINING_KEYS
    missing = [k for k in needed if k not in cfg]
    if missing and ("MODEL" in cfg or "_BASE_" in cfg):
        raise ConfigError(f"config file {config_file} is a YAML config of tools/train_net.py, not a LazyConfig")
    if missing:
        raise ConfigError(
            f"config file {config_file} has no {', '.join(missing)}; "
            f"{'evaluation' if eval_only else 'training'} needs {', '.join(needed)}"
        )
    part = "test" if eval_only else "train"
    if not isinstance(cfg.dataloader, DictConfig) or part not in cfg.dataloader:
        raise ConfigError(f"config file {config_file} has no dataloader.{part}")
    if args is not None:
        _apply_user_datasets(cfg, args)
    for item in overrides:
        _apply_override(cfg, item)
    return cfg


def _one_line(error) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def _apply_override(cfg, item: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([item])
    except Exception as e:
        raise ConfigError(f"override {item!r} is not KEY=VALUE: {_one_line(e)}") from None
    key = override.key_or_group
    if override.is_delete():
        raise ConfigError(f"override {item!r}: deleting a key is not supported")
    value = override.value()
    if not (override.is_add() or override.is_force_add()):  # "+key=value" may add a key
        _check_override(cfg, key, value, item)
    try:
        LazyConfig.apply_overrides(cfg, [item])
    except Exception as e:
        raise ConfigError(f"override {item!r}: {_one_line(e)}") from None


def _check_override(cfg, key: str, value, item: str) -> None:
    """`key` must name a key of `cfg`, or a keyword its LazyCall's target accepts; keep numbers and bools."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        here = ".".join(parts[:i]) or "the config"
        last = i == len(parts) - 1
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {item!r}: {here} is a list of {len(node)}; {part!r} is not an index of it")
            index = int(part)
            if last:
                _check_type(node, index, node._get_node(index)._value(), value, item)
                return
            node = node[index]
        elif isinstance(node, DictConfig):
            if part not in node:
                if last and _target_accepts(node, part):
                    return
                raise ConfigError(f"override {item!r}: {here} has no key {part!r}{_known_keys(node)}")
            if last:
                _check_type(node, part, node._get_node(part)._value(), value, item)
                return
            node = node[part]
        else:
            raise ConfigError(f"override {item!r}: {here} is {node!r}, not a config with keys")


def _check_type(parent, key, current, value, item: str) -> None:
    if OmegaConf.is_interpolation(parent, key) or current is None or value is None:
        return
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"override {item!r}: the value must be true or false (it is {current!r})")
    elif isinstance(current, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"override {item!r}: the value must be a number (it is {current!r})")


def _target_accepts(node: DictConfig, name: str) -> bool:
    """Whether `node` is a LazyCall whose target takes keyword `name` (a default left out of the config)."""
    if "_target_" not in node:
        return False
    target = node._target_
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            target = locate(target)
        except Exception:
            return False
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _known_keys(node: DictConfig) -> str:
    keys = [str(k) for k in node.keys() if k != "_target_"]
    return f" (it has {', '.join(keys)})" if keys else ""


def _apply_user_datasets(cfg, args) -> None:
    """--train-json/--test-json & co.: register them (as tools/train_net.py does) and point the loaders at them."""
    try:
        opts = user_dataset_opts(args)
    except SystemExit as e:  # the flags do not pair up
        raise ConfigError(str(e.code)) from None
    except (ValueError, OSError) as e:  # the json does not validate
        raise ConfigError(_one_line(e)) from None
    for key, value in zip(opts[::2], opts[1::2]):
        if key == "DATASETS.TRAIN":
            cfg.dataloader.train.dataset.names = value[0]
        elif key == "DATASETS.TEST":
            if "test" not in cfg.dataloader:
                raise ConfigError("--test-json: the config has no dataloader.test")
            cfg.dataloader.test.dataset.names = value[0]
            if "evaluator" in cfg.dataloader and "dataset_name" in cfg.dataloader.evaluator:
                cfg.dataloader.evaluator.dataset_name = value[0]
        elif key == "MODEL.RETINANET.NUM_CLASSES":
            cfg.model.num_classes = value


def dataset_names(cfg) -> SimpleNamespace:
    """The dataset names of a lazy config's loaders and evaluator, as DATASETS.TRAIN / TEST."""

    def names(path):
        value = OmegaConf.select(cfg, path, default=None)
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)

    test = names("dataloader.test.dataset.names") + names("dataloader.evaluator.dataset_name")
    return SimpleNamespace(DATASETS=SimpleNamespace(TRAIN=names("dataloader.train.dataset.names"), TEST=test))


def setup(args):
    """The checked config of `args`, its datasets registered, Detectron2's default_setup done."""
    cfg = load_lazy_config(args.config_file, list(args.opts), eval_only=args.eval_only, args=args)
    register_config_datasets(dataset_names(cfg))
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="retina_plugin", abbrev_name="retina")
    return cfg


# ---------------------------------------------------------------- training and evaluation


class _LossNormalizerState:
    """Keeps the focal loss's normaliser (RetinaNetPlugin.loss_normalizer) in the trainer's checkpoint state."""

    def state_dict(self):
        ret = super().state_dict()
        model = _unwrap(self.model)
        if hasattr(model, "loss_normalizer"):
            ret["loss_normalizer"] = model.loss_normalizer
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "loss_normalizer" in state_dict:
            _unwrap(self.model).loss_normalizer = state_dict["loss_normalizer"]


class LazySimpleTrainer(_LossNormalizerState, SimpleTrainer):
    pass


class LazyAMPTrainer(_LossNormalizerState, AMPTrainer):
    pass


def do_test(cfg, model) -> Optional[dict]:
    """Evaluate `model` on dataloader.test with dataloader.evaluator; log Detectron2's tables."""
    if "evaluator" not in cfg.dataloader:
        return None
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
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
    checkpointer = RetinaCheckpointer(model, cfg.train.output_dir, trainer=trainer)
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
            hooks.EvalHook(cfg.train.eval_period, test_and_keep),
            (
                hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
                if comm.is_main_process()
                else None
            ),
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # The checkpoint holds the iteration that just finished: start at the next one.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return results


def main(args):
    """One process's work (under `launch`): evaluate with --eval-only, else train."""
    try:
        cfg = setup(args)
    except ConfigError as e:
        fail(e)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = _create_ddp_model(model, cfg.train.device)
        # --resume: the last checkpoint of train.output_dir, else train.init_checkpoint.
        RetinaCheckpointer(model, save_dir=cfg.train.output_dir).resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
        return do_test(cfg, model)
    return do_train(args, cfg)


def fail(error) -> None:
    """End the program with `lazyconfig_train_net: error: ...` on stderr and status 2."""
    sys.stderr.write(f"{PROG}: error: {_one_line(error)}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def check_args(args) -> None:
    """
    Load and check the config of `args` once, before `launch` starts any process, building its
    model on the CPU so that a value the model rejects fails here too (fails as `fail`).
    """
    try:
        cfg = load_lazy_config(args.config_file, list(args.opts), eval_only=args.eval_only, args=args)
        check_model(cfg, args.config_file)
    except ConfigError as e:
        fail(e)


def check_model(cfg, config_file: str = "") -> None:
    """Build cfg.model once; raise ConfigError naming the innermost part that fails to build, and why."""
    try:
        instantiate(cfg.model)
    except Exception as e:
        path, target = _failing_part(cfg.model, "model")
        what = f"{path} ({target})" if target else path
        raise ConfigError(f"config {config_file}: cannot build {what}: {type(e).__name__}: {_one_line(e)}") from None


def _failing_part(node, path):
    """The deepest LazyCall under `node` (itself included) whose instantiation fails, and its target's name."""
    children = node.items() if isinstance(node, DictConfig) else enumerate(node) if isinstance(node, ListConfig) else ()
    for key, child in children:
        if key == "_target_" or not isinstance(child, (DictConfig, ListConfig)):
            continue
        try:
            instantiate(child)
        except Exception:
            return _failing_part(child, f"{path}.{key}")
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    name = target if isinstance(target, str) or target is None else getattr(target, "__qualname__", repr(target))
    return path, name
