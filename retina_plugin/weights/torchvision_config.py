"""
The RetinaNetPlugin config of each torchvision RetinaNet: every setting in which the source
model differs from Detectron2's defaults, each with the torchvision code it reproduces
(docs/weights.md has the table).
"""
from typing import Dict, List, Optional

from detectron2.config import CfgNode

from ..config import ConfigError, check_retina_plugin_config, get_retina_plugin_cfg, merge_options

SOURCES = ("torchvision", "torchvision-v2", "deepforest")
TORCHVISION_BUILDERS = {"torchvision": "retinanet_resnet50_fpn", "torchvision-v2": "retinanet_resnet50_fpn_v2"}

# torchvision.models.detection.retinanet._default_anchorgen: base x 2^0, 2^(1/3), 2^(2/3) made
# int (40, 50, 80, 101, ...), ratios (h / w) 0.5, 1, 2 on every level.
TORCHVISION_ANCHOR_SIZES = [[x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))] for x in [32, 64, 128, 256, 512]]
TORCHVISION_ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
# GeneralizedRCNNTransform's ImageNet mean / std of [0, 1] RGB, for Detectron2's 0-255 input.
IMAGENET_MEAN_255 = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD_255 = [0.229 * 255, 0.224 * 255, 0.225 * 255]

# What torchvision's retinanet_resnet50_fpn is, as config keys (v1; DeepForest is v1 too).
TORCHVISION_SETTINGS = {
    "MODEL.META_ARCHITECTURE": "RetinaNetPlugin",
    "MODEL.BACKBONE.NAME": "build_retina_plugin_resnet_fpn_backbone",
    "MODEL.PIXEL_MEAN": IMAGENET_MEAN_255,
    "MODEL.PIXEL_STD": IMAGENET_STD_255,
    "INPUT.FORMAT": "RGB",
    # torchvision's ResNet-50: stride in the 3x3 conv; BN (eps 1e-5) frozen at inference.
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.OUT_FEATURES": ["res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
    # LastLevelP6P7(256, 256): use_P5 = in_channels == out_channels.
    "MODEL.RETINA_PLUGIN.P6_SOURCE": "p5",
    "MODEL.ANCHOR_GENERATOR.NAME": "TorchvisionAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.SIZES": TORCHVISION_ANCHOR_SIZES,
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": TORCHVISION_ASPECT_RATIOS,
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RETINANET.IN_FEATURES": ["p3", "p4", "p5", "p6", "p7"],
    "MODEL.RETINANET.NUM_CONVS": 4,
    "MODEL.RETINANET.NORM": "",
    "MODEL.RETINANET.PRIOR_PROB": 0.01,
    "MODEL.RETINA_PLUGIN.HEAD_NAME": "FocalLossHead",
    # Training as torchvision trains it: Matcher(0.5, 0.4, allow_low_quality_matches=True),
    # focal loss 0.25 / 2, L1 box loss on BoxCoder(1, 1, 1, 1) deltas.
    "MODEL.RETINANET.IOU_THRESHOLDS": [0.4, 0.5],
    "MODEL.RETINANET.IOU_LABELS": [0, -1, 1],
    "MODEL.RETINA_PLUGIN.ALLOW_LOW_QUALITY_MATCHES": True,
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": 0.25,
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": 2.0,
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.0,
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
    # RetinaNet.postprocess_detections and its defaults.
    "MODEL.RETINA_PLUGIN.POSTPROCESS_NAME": "TorchvisionDecodeAndNMS",
    "MODEL.RETINANET.SCORE_THRESH_TEST": 0.05,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 1000,
    "MODEL.RETINANET.NMS_THRESH_TEST": 0.5,
    "TEST.DETECTIONS_PER_IMAGE": 300,
    # GeneralizedRCNNTransform(min_size=800, max_size=1333).
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.MIN_SIZE_TRAIN": [800],
    "INPUT.MAX_SIZE_TRAIN": 1333,
}

# retinanet_resnet50_fpn_v2: LastLevelP6P7(2048, 256) takes C5; GroupNorm(32) head without conv
# bias; GIoU box loss.
TORCHVISION_V2_SETTINGS = {
    **TORCHVISION_SETTINGS,
    "MODEL.RETINA_PLUGIN.P6_SOURCE": "res5",
    "MODEL.RETINANET.NORM": "GN",
    "MODEL.RETINA_PLUGIN.HEAD_NAME": "TorchvisionFocalLossHead",
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "giou",
}

# DeepForest's config.json / config.yaml names for the test keys it sets.
DEEPFOREST_KEYS = {
    "score_thresh": "MODEL.RETINANET.SCORE_THRESH_TEST",
    "nms_thresh": "MODEL.RETINANET.NMS_THRESH_TEST",
    "detections_per_img": "TEST.DETECTIONS_PER_IMAGE",
    "topk_candidates": "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
}


# DeepForest's predict_tile with its defaults (deepforest.main.predict_tile, conf/config.yaml):
# 400 px windows sharing floor(400 * 0.05) px, each resized as torchvision's transform resizes an
# image (400 -> 800), merged by `predict.mosiac` (corners cut to whole pixels, one NMS over all
# windows at IoU 0.15). Tiles are cut from the image as it is: no loader resize.
DEEPFOREST_SETTINGS = {
    **TORCHVISION_SETTINGS,
    "MODEL.RETINA_PLUGIN.TILE_SIZE": 400,
    "MODEL.RETINA_PLUGIN.TILE_OVERLAP": 0.05,
    "MODEL.RETINA_PLUGIN.TILE_RESIZE": [800, 1333],
    "MODEL.RETINA_PLUGIN.TILE_MERGE": "deepforest",
    "MODEL.RETINA_PLUGIN.TILE_NMS_THRESH": 0.15,
    "INPUT.MIN_SIZE_TEST": 0,
}


def source_settings(source: str) -> Dict[str, object]:
    """The config keys and values of a source model: "torchvision", "torchvision-v2" or "deepforest"."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    return dict({"torchvision-v2": TORCHVISION_V2_SETTINGS, "deepforest": DEEPFOREST_SETTINGS}.get(source, TORCHVISION_SETTINGS))


def converted_config(
    source: str, num_classes: int, weights: str, extra: Optional[Dict[str, object]] = None, opts: List[str] = ()
) -> CfgNode:
    """
    The whole config of a converted model: Detectron2's defaults and the plugin's keys, the
    source's settings, `extra` (e.g. DeepForest's thresholds), NUM_CLASSES, MODEL.WEIGHTS, then
    `opts` (KEY VALUE pairs), checked.
    """
    cfg = get_retina_plugin_cfg()
    settings = {**source_settings(source), **(extra or {})}
    settings.update({"MODEL.RETINANET.NUM_CLASSES": num_classes, "MODEL.WEIGHTS": weights})
    for key, value in settings.items():
        node = cfg
        *parents, name = key.split(".")
        for parent in parents:
            node = node[parent]
        node[name] = type(node[name])(value) if isinstance(node[name], tuple) else value
    try:
        merge_options(cfg, opts)
        check_retina_plugin_config(cfg)
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ConfigError(f"the converted {source} config with options {list(opts)}: {reason}") from None
    return cfg


# The settings torchvision's model fixes and the weights depend on; the way back checks them.
ARCHITECTURE_KEYS = (
    "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT",
    "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.STRIDE_IN_1X1", "MODEL.RESNETS.NORM", "MODEL.RESNETS.OUT_FEATURES",
    "MODEL.FPN.IN_FEATURES", "MODEL.FPN.OUT_CHANNELS", "MODEL.FPN.NORM", "MODEL.FPN.FUSE_TYPE",
    "MODEL.RETINA_PLUGIN.P6_SOURCE", "MODEL.ANCHOR_GENERATOR.NAME", "MODEL.ANCHOR_GENERATOR.SIZES",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "MODEL.ANCHOR_GENERATOR.OFFSET", "MODEL.RETINANET.IN_FEATURES",
    "MODEL.RETINANET.NUM_CONVS", "MODEL.RETINANET.NORM", "MODEL.RETINA_PLUGIN.HEAD_NAME",
)  # fmt: skip


def torchvision_variant(cfg: CfgNode) -> str:
    """
    Which torchvision RetinaNet a plugin config is ("torchvision" or "torchvision-v2", by
    MODEL.RETINANET.NORM), for the way back; an architecture setting torchvision's model does
    not have raises ConfigError naming the key.
    """
    variant = "torchvision-v2" if cfg.MODEL.RETINANET.NORM else "torchvision"
    wanted = source_settings(variant)
    for key in ARCHITECTURE_KEYS:
        value = cfg
        for part in key.split("."):
            value = value[part]
        if _normalised(value) != _normalised(wanted[key]):
            raise ConfigError(
                f"{key} = {value!r}: torchvision's {TORCHVISION_BUILDERS[variant]} has {wanted[key]!r}; these weights cannot go to it"
            )
    return variant


def _normalised(value):
    """Lists for tuples, floats for ints: 800 == 800.0, (1, 2) == [1, 2]."""
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(float(value), 6)
    return value
