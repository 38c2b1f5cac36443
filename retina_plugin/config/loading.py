"""
`load_config`, the config every tool uses: Detectron2's defaults with the plugin's keys, a file,
KEY VALUE options, checked before anything is built; `ConfigError` names the key and the file.
The file and its `_BASE_` configs are read as data (`yaml_bases`, `safe_yaml`), never with the
`yaml.unsafe_load` that Detectron2's `CfgNode.merge_from_file` falls back to.
"""
import contextlib
import os
from typing import Optional, Sequence

from detectron2.config import CfgNode as CN

from .checks import check_retina_plugin_config
from .keys import add_retina_plugin_config
from .safe_yaml import ConfigError
from .yaml_bases import load_yaml_with_bases


def load_config(config_file: Optional[str] = None, opts: Sequence = ()) -> CN:
    """
    The config every tool uses: Detectron2's defaults with `cfg.MODEL.RETINA_PLUGIN`, then
    `config_file`, then `opts` (KEY VALUE pairs), checked before anything is built. An unknown
    key, a key that moved, a wrong type or an out-of-range value raises ConfigError naming the
    key (and the file).
    """
    cfg = get_retina_plugin_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        loaded = load_yaml_with_bases(config_file)
        try:
            merge_config_mapping(cfg, loaded, config_file)
        except (KeyError, ValueError, TypeError, AssertionError, OSError) as e:
            raise ConfigError(f"config file {config_file}: {_reason(e)}") from None
    try:
        merge_options(cfg, opts)
        if cfg.MODEL.META_ARCHITECTURE == "RetinaNetPlugin":
            check_retina_plugin_config(cfg)
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"config {config_file or '(defaults)'} with options {list(opts)}: {_reason(e)}") from None
    return cfg


def merge_config_mapping(cfg: CN, loaded: dict, filename: str) -> None:
    """
    Merge the mapping of a config file into `cfg` as `CfgNode.merge_from_file` merges the mapping
    it loads: an older config VERSION is upgraded with Detectron2's compat rules.
    """
    with two_type_keys(cfg):
        _merge_mapping(cfg, type(cfg)(loaded), filename)


def _merge_mapping(cfg: CN, loaded_cfg: CN, filename: str) -> None:
    from detectron2.config.compat import downgrade_config, guess_version, upgrade_config

    version = loaded_cfg.get("VERSION", None)
    if version is None:
        version = guess_version(loaded_cfg, filename)
    if version > cfg.VERSION:
        raise ValueError(f"VERSION {version} is newer than this Detectron2's {cfg.VERSION}")
    if version == cfg.VERSION:
        cfg.merge_from_other_cfg(loaded_cfg)
        return
    old = downgrade_config(cfg, to_version=version)
    old.merge_from_other_cfg(loaded_cfg)
    upgraded = upgrade_config(old)
    cfg.clear()
    cfg.update(upgraded)


def merge_options(cfg: CN, opts: Sequence) -> None:
    """`cfg.merge_from_list(opts)`, where a key of TWO_TYPE_KEYS takes either of its types."""
    with two_type_keys(cfg):
        cfg.merge_from_list(list(opts))


# Keys whose value has one of two types: WINOGRAD is "auto" or True / False. yacs merges a
# value of another type than the current one only over None.
TWO_TYPE_KEYS = (("MODEL", "RETINA_PLUGIN", "WINOGRAD"),)


@contextlib.contextmanager
def two_type_keys(cfg: CN):
    """Within it, TWO_TYPE_KEYS hold None; after it, the value merged, or the one before if none was."""
    before = {path: _node(cfg, path[:-1]).get(path[-1]) for path in TWO_TYPE_KEYS if _node(cfg, path[:-1]) is not None}
    for path in before:
        _node(cfg, path[:-1])[path[-1]] = None
    try:
        yield
    finally:
        for path, value in before.items():
            node = _node(cfg, path[:-1])  # looked up again: an upgrade of an old VERSION replaces the nodes
            if node is not None and node.get(path[-1]) is None:
                node[path[-1]] = value


def _node(cfg: CN, path):
    for name in path:
        cfg = cfg.get(name) if isinstance(cfg, dict) else None
    return cfg


def _reason(error: Exception) -> str:
    # KeyError's str() is the repr of its argument; the others read as they are.
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def get_retina_plugin_cfg():
    """Detectron2's default config with `cfg.MODEL.RETINA_PLUGIN` added (a fresh copy)."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_retina_plugin_config(cfg)
    return cfg
