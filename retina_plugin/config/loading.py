"""
`load_config`, the config every tool uses: Detectron2's defaults with the plugin's keys, a file,
KEY VALUE options, checked before anything is built; `ConfigError` names the key and the file.
"""
import os
from typing import Optional, Sequence

from detectron2.config import CfgNode as CN

from ..errors import UserError
from .checks import check_retina_plugin_config
from .keys import add_retina_plugin_config


class ConfigError(UserError):
    """A config file or KEY VALUE option that cannot be used; the message names the file and key."""


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
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, TypeError, AssertionError, OSError) as e:
            raise ConfigError(f"config file {config_file}: {_reason(e)}") from None
    try:
        cfg.merge_from_list(list(opts))
        if cfg.MODEL.META_ARCHITECTURE == "RetinaNetPlugin":
            check_retina_plugin_config(cfg)
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"config {config_file or '(defaults)'} with options {list(opts)}: {_reason(e)}") from None
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
