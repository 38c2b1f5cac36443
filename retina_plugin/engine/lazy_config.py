"""
Detectron2 LazyConfig (Python) configs, loaded and checked before anything is built or
launched: a missing or broken file, a config lacking a part, a KEY=VALUE override naming no key
of the config (or no argument of the object it configures) or giving a string where a number or
bool is, a model its constructors refuse, and an `inference` node that is not InferenceSettings
raise ConfigError naming the file, the override and the key.

A config holds `model`, `dataloader.{train,test,evaluator}`, `optimizer`, `lr_multiplier` and
`train` (Detectron2's configs/common/train.py keys), and optionally `inference`
(retina_plugin.inference.model.InferenceSettings: int8 calibration, tiling, test-time augmentation).

A `.py` LazyConfig is Python: loading it runs its code, by design. A `.yaml` LazyConfig is data,
parsed with the config's safe loader (retina_plugin.config.safe_yaml), never with the
`yaml.unsafe_load` of Detectron2's `LazyConfig.load`.
"""
import inspect
import os
from types import SimpleNamespace
from typing import List, Sequence

from detectron2.config import LazyConfig, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config import ConfigError
from ..config.safe_yaml import parse_yaml, read_config_text
from ..inference.model import lazy_inference_settings

# The parts of a config that training instantiates; evaluation needs model, train, dataloader.test.
TRAINING_KEYS = ("model", "dataloader", "optimizer", "lr_multiplier", "train")
EVALUATION_KEYS = ("model", "dataloader", "train")


def load_lazy_config(config_file: str, overrides: List[str] = (), *, eval_only: bool = False, dataset_opts: Sequence = ()):
    """
    `config_file` (a LazyConfig .py or .yaml) with `dataset_opts` (the YAML-style DATASETS.TRAIN /
    DATASETS.TEST / MODEL.RETINANET.NUM_CLASSES opts of registered user datasets,
    retina_plugin.cli.arguments.user_dataset_opts) and then `overrides` applied, checked as the
    module docstring says. Raises ConfigError naming the file, the override and the key.
    """
    if not config_file:
        raise ConfigError("--config-file is required")
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file not found: {config_file}")
    if os.path.splitext(config_file)[1] not in (".py", ".yaml", ".yml"):
        raise ConfigError(f"config file {config_file}: a LazyConfig is a .py (or .yaml) file; for the YAML configs use tools/train_net.py")
    try:
        cfg = _load_yaml(config_file) if config_file.endswith((".yaml", ".yml")) else LazyConfig.load(config_file)
    except ConfigError:
        raise
    except Exception as e:  # SyntaxError, ImportError, anything its code raises
        raise ConfigError(f"config file {config_file}: {type(e).__name__}: {one_line(e)}") from None
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
    apply_dataset_opts(cfg, dataset_opts)
    for item in overrides:
        _apply_override(cfg, item)
    return cfg


def _load_yaml(config_file: str):
    """A `.yaml` LazyConfig as `LazyConfig.load` makes it (objects allowed in the nodes), read as data."""
    data = parse_yaml(read_config_text(config_file), config_file)
    return OmegaConf.create(data, flags={"allow_objects": True}) if isinstance(data, dict) else data


def one_line(error) -> str:
    """An error's message on one line (a KeyError's without its quotes)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def _apply_override(cfg, item: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([item])
    except Exception as e:
        raise ConfigError(f"override {item!r} is not KEY=VALUE: {one_line(e)}") from None
    key = override.key_or_group
    if override.is_delete():
        raise ConfigError(f"override {item!r}: deleting a key is not supported")
    value = override.value()
    if not (override.is_add() or override.is_force_add()):  # "+key=value" may add a key
        _check_override(cfg, key, value, item)
    try:
        LazyConfig.apply_overrides(cfg, [item])
    except Exception as e:
        raise ConfigError(f"override {item!r}: {one_line(e)}") from None


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


def apply_dataset_opts(cfg, opts: Sequence) -> None:
    """Point the loaders (and the evaluator) of `cfg` at the datasets of YAML-style `opts` (KEY, VALUE, ...)."""
    opts = list(opts)
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


def predicts_rotated_boxes(model) -> bool:
    """Whether `model` (cfg.model as `check_model` built it) has an anchor generator of rotated (5-number) anchors, as Detectron2's RotatedAnchorGenerator."""
    return getattr(getattr(model, "anchor_generator", None), "box_dim", 4) == 5


def check_model(cfg, config_file: str = ""):
    """
    Build cfg.model once and return it (what the other checks read, e.g. `predicts_rotated_boxes`);
    raise ConfigError naming the innermost part that fails to build, and why.
    """
    try:
        return instantiate(cfg.model)
    except Exception as e:
        path, target = _failing_part(cfg.model, "model")
        what = f"{path} ({target})" if target else path
        raise ConfigError(f"config {config_file}: cannot build {what}: {type(e).__name__}: {one_line(e)}") from None


def check_inference_settings(cfg, config_file: str = "") -> None:
    """The config's `inference` node builds InferenceSettings, or a ConfigError naming the field."""
    try:
        lazy_inference_settings(cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config {config_file}: inference: {one_line(e)}") from None


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
