"""
The plugin's config: Detectron2's own RetinaNet keys, plus `cfg.MODEL.RETINA_PLUGIN` for what
Detectron2 has no key for (`keys`); their checks (`checks`); and `load_config` (`loading`), which
reads the file and its `_BASE_` configs as data (`yaml_bases`, `safe_yaml`, `arithmetic`), never
with `yaml.unsafe_load`. For LazyConfigs, `lazy_model.as_retinanet_plugin` switches Detectron2's
RetinaNet `model` node to the plugin in one line.

RetinaNetPlugin reads, with Detectron2's meaning, `MODEL.RETINANET.*` (classes, head, focal loss,
matching, box loss, inference), `MODEL.ANCHOR_GENERATOR.*` (sizes and aspect ratios per level),
`TEST.DETECTIONS_PER_IMAGE`, `MODEL.FPN.*` and `MODEL.RESNETS.*`, so a Detectron2 RetinaNet config
switches to the plugin with `MODEL.META_ARCHITECTURE: RetinaNetPlugin` alone.
"""
from .checks import anchor_params_per_level, check_retina_plugin_config, check_tta_config
from .keys import MOVED_KEYS, VALID_TILE_MERGES, VALID_TTA_MERGES, add_retina_plugin_config
from .loading import ConfigError, get_retina_plugin_cfg, load_config, merge_options

__all__ = [
    "MOVED_KEYS",
    "VALID_TILE_MERGES",
    "VALID_TTA_MERGES",
    "add_retina_plugin_config",
    "anchor_params_per_level",
    "check_retina_plugin_config",
    "check_tta_config",
    "ConfigError",
    "get_retina_plugin_cfg",
    "load_config",
    "merge_options",
]
