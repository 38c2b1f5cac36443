"""
The plugin's config: Detectron2's own RetinaNet keys, plus `cfg.MODEL.RETINA_PLUGIN` for what
Detectron2 has no key for; their checks; and `load_config`.

RetinaNetPlugin reads, with Detectron2's meaning, `MODEL.RETINANET.*` (classes, head, focal loss,
matching, box loss, inference), `MODEL.ANCHOR_GENERATOR.*` (sizes and aspect ratios per level),
`TEST.DETECTIONS_PER_IMAGE`, `MODEL.FPN.*` and `MODEL.RESNETS.*`, so a Detectron2 RetinaNet config
switches to the plugin with `MODEL.META_ARCHITECTURE: RetinaNetPlugin` alone.
"""
import collections.abc
import os
from typing import Optional, Sequence

from detectron2.config import CfgNode as CN

from .errors import UserError
from .modeling.backbone import P6_SOURCES as VALID_P6_SOURCES
from .modeling.head import BOX_REG_LOSSES as VALID_BOX_REG_LOSSES
from .modeling.meta_arch import VALID_INFERENCE_DTYPES
# The norms detectron2.layers.get_norm builds; "BN" and "SyncBN" become one norm per level.
VALID_HEAD_NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")
# The anchor generators whose anchor count per level follows from SIZES x ASPECT_RATIOS, so it
# can be checked when the config is loaded; others are checked when the model is built.
SIZE_TIMES_RATIO_GENERATORS = ("DefaultAnchorGenerator", "RetinaAnchorGenerator")
# How test-time augmentation merges the versions' candidates (retina_plugin.inference.tta).
VALID_TTA_MERGES = ("nms", "wbf")

# Keys of MODEL.RETINA_PLUGIN that copied a Detectron2 key under another name; setting one
# fails at load and names the key to use.
MOVED_KEYS = {
    "NUM_CLASSES": "MODEL.RETINANET.NUM_CLASSES",
    "IN_FEATURES": "MODEL.RETINANET.IN_FEATURES",
    "NUM_CONVS": "MODEL.RETINANET.NUM_CONVS",
    "NORM": "MODEL.RETINANET.NORM",
    "PRIOR_PROB": "MODEL.RETINANET.PRIOR_PROB",
    "FOCAL_LOSS_ALPHA": "MODEL.RETINANET.FOCAL_LOSS_ALPHA",
    "FOCAL_LOSS_GAMMA": "MODEL.RETINANET.FOCAL_LOSS_GAMMA",
    "BG_IOU_THRESHOLD": "MODEL.RETINANET.IOU_THRESHOLDS",
    "FG_IOU_THRESHOLD": "MODEL.RETINANET.IOU_THRESHOLDS",
    "BBOX_REG_WEIGHTS": "MODEL.RETINANET.BBOX_REG_WEIGHTS",
    "BBOX_REG_LOSS_TYPE": "MODEL.RETINANET.BBOX_REG_LOSS_TYPE",
    "SMOOTH_L1_BETA": "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA",
    "SCORE_THRESH_TEST": "MODEL.RETINANET.SCORE_THRESH_TEST",
    "TOPK_CANDIDATES_TEST": "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
    "NMS_THRESH_TEST": "MODEL.RETINANET.NMS_THRESH_TEST",
    "DETECTIONS_PER_IMAGE": "TEST.DETECTIONS_PER_IMAGE",
    "ANCHOR_SIZES": "MODEL.ANCHOR_GENERATOR.SIZES",
    "ANCHOR_OCTAVE_SCALES": "MODEL.ANCHOR_GENERATOR.SIZES",
    "ANCHOR_ASPECT_RATIOS": "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "ANCHOR_OFFSET": "MODEL.ANCHOR_GENERATOR.OFFSET",
}
_MOVED_NOTES = {
    "BG_IOU_THRESHOLD": "[BG, FG] thresholds with MODEL.RETINANET.IOU_LABELS [0, -1, 1], e.g. [0.4, 0.5]",
    "FG_IOU_THRESHOLD": "[BG, FG] thresholds with MODEL.RETINANET.IOU_LABELS [0, -1, 1], e.g. [0.4, 0.5]",
    "ANCHOR_SIZES": "every anchor size of each level, octave scales applied, e.g. "
    "[[32, 40.32, 50.80], [64, 80.63, 101.59], ...] for base 32 and scales 2^0, 2^(1/3), 2^(2/3)",
    "ANCHOR_OCTAVE_SCALES": "every anchor size of each level, octave scales applied, e.g. "
    "[[32, 40.32, 50.80], [64, 80.63, 101.59], ...] for base 32 and scales 2^0, 2^(1/3), 2^(2/3)",
    "ANCHOR_ASPECT_RATIOS": "a list per level, or one list for all, e.g. [[0.5, 1.0, 2.0]]",
}


def add_retina_plugin_config(cfg):
    """
    Add to a Detectron2 config what RetinaNetPlugin needs beyond Detectron2's own keys:
    `cfg.MODEL.RETINA_PLUGIN` and `cfg.DATALOADER.SKIP_UNREADABLE_IMAGES`. Registers the keys
    that moved to Detectron2's nodes, so that a config setting one fails naming the new key.
    """
    _C = cfg
    # Training data (retina_plugin.data.loader): an image file that is missing or cannot be
    # decoded stops the run naming the file and its dataset; True logs it, counts it and
    # trains without it. Evaluation always stops (it must cover every image).
    _C.DATALOADER.SKIP_UNREADABLE_IMAGES = False

    _C.MODEL.RETINA_PLUGIN = CN()
    node = _C.MODEL.RETINA_PLUGIN

    # Input of the P6 conv of build_retina_plugin_resnet_fpn_backbone: "res5" (C5, the paper
    # and Detectron2) or "p5" (FCOS, torchvision v2).
    node.P6_SOURCE = "res5"

    # Anchor matching (with MODEL.RETINANET.IOU_THRESHOLDS / IOU_LABELS): each ground-truth box
    # also keeps its best anchor(s) as foreground. Detectron2's RetinaNet hard-codes True.
    node.ALLOW_LOW_QUALITY_MATCHES = True

    # Both losses are divided by an exponential moving average of the foreground anchor count:
    # normalizer = MOMENTUM * normalizer + (1 - MOMENTUM) * max(num_fg, 1), starting at INIT.
    # MOMENTUM = 0.0 divides by the batch's own count (the paper). Detectron2 hard-codes 0.9, 100.
    node.LOSS_NORMALIZER_MOMENTUM = 0.9
    node.LOSS_NORMALIZER_INIT = 100.0

    # Registry name of the head (RETINA_HEAD_REGISTRY) and of the postprocessor
    # (RETINA_POSTPROCESS_REGISTRY).
    node.HEAD_NAME = "FocalLossHead"
    node.POSTPROCESS_NAME = "DecodeAndNMS"

    # Speed, not results. Convolutions in NHWC memory layout (faster CPU and cuDNN kernels).
    node.CHANNELS_LAST = True
    # Precision of backbone and head at inference: "float32", or opt-in "bfloat16" (CPUs with
    # AVX-512 BF16 / AMX, and GPUs) or "float16" (GPUs), run under torch.autocast, or "int8"
    # (CPU only: oneDNN int8 convolutions, retina_plugin.inference.int8) with the activation
    # ranges in INT8_CALIBRATION. Decoding and NMS stay float32. Training is unaffected.
    node.INFERENCE_DTYPE = "float32"
    # JSON file of activation ranges written by tools/calibrate_int8.py for these weights;
    # read when INFERENCE_DTYPE is "int8".
    node.INT8_CALIBRATION = ""
    # Opt-in, float32 only: torch.compile (inductor, freezing) of backbone and head at inference,
    # never in training. The first eval forward compiles (about a minute for an R50-FPN on 2 CPU
    # cores), and so does each new input size; it pays off on a stream of same-size images.
    node.COMPILE = False
    # Float32 inference on the CPU: 3x3 stride-1 convolutions with >= 128 channels in and >= 32
    # out (the head's; the FPN's outputs and ResNet res3/res4 where the per-call filter
    # transform pays: winograd.pays_per_call) run as Winograd F(4x4, 3x3)
    # (retina_plugin.modeling.winograd), 1.2-2.5x faster per convolution; outputs within float
    # rounding of the direct convolution (~1e-5 relative per layer), the same detections.
    # False = oneDNN's direct convolution, bit for bit. GPUs (cuDNN picks its own algorithm),
    # training, bfloat16, int8, export and COMPILE do not use it.
    node.WINOGRAD = True

    # Tiled inference for large images (retina_plugin.inference.tiling). Side of the square tiles in
    # pixels, fed at the image's own resolution (no resize); 0 = off. When > 0, tiled
    # evaluation needs INPUT.MIN_SIZE_TEST 0, and TEST.DETECTIONS_PER_IMAGE caps each tile.
    node.TILE_SIZE = 0
    # Fraction of TILE_SIZE shared by neighbouring tiles, in [0, 1): an object is seen whole by
    # some tile when it is smaller than about TILE_OVERLAP * TILE_SIZE.
    node.TILE_OVERLAP = 0.2
    # Tiles per forward pass: memory grows with TILE_BATCH * TILE_SIZE^2, not with the image.
    node.TILE_BATCH = 4
    # The most detections kept for a whole tiled image or raster, by score; 0 = no cap (a large
    # image holds far more objects than one tile: TEST.DETECTIONS_PER_IMAGE caps each tile).
    node.TILED_DETECTIONS_PER_IMAGE = 0

    # Raster bands (1-based, GDAL's numbering) read as the model's channels by
    # tools/predict_raster.py and the raster datasets of train_net.py (--train-raster); the
    # first three are red, green, blue, given to the model in INPUT.FORMAT order, further
    # bands follow. [] = the first len(MODEL.PIXEL_MEAN) bands. --bands overrides it.
    node.RASTER_BANDS = []

    # Test-time augmentation (retina_plugin.inference.tta; on with Detectron2's TEST.AUG.ENABLED, versions
    # from TEST.AUG.MIN_SIZES, MAX_SIZE, FLIP): how the raw candidates of all versions are merged,
    # "nms" (class-wise NMS at MODEL.RETINANET.NMS_THRESH_TEST) or "wbf" (weighted box fusion of
    # the boxes overlapping at IoU >= NMS_THRESH_TEST).
    node.TTA_MERGE = "nms"

    for old, new in MOVED_KEYS.items():
        full_key = f"MODEL.RETINA_PLUGIN.{old}"
        if not _C.key_is_renamed(full_key):
            _C.register_renamed_key(full_key, new, _MOVED_NOTES.get(old, "same meaning as Detectron2's RetinaNet"))


def _fail(key, value, why):
    raise ValueError(f"cfg.{key} = {value!r}: {why}")


def _is_number_list(values) -> bool:
    return (
        isinstance(values, collections.abc.Sequence)
        and len(values) > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
    )


def anchor_params_per_level(values, num_levels: int, key: str):
    """
    Detectron2's reading of MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS: a list of numbers, or
    one list, applies to every level; otherwise one list per level. Returns one list per level.
    """
    if _is_number_list(values):
        return [list(values)] * num_levels
    if not isinstance(values, collections.abc.Sequence) or not all(_is_number_list(v) for v in values) or not values:
        _fail(key, values, "must be a list of positive numbers, or of such lists (one per level)")
    if len(values) == 1:
        return [list(values[0])] * num_levels
    if len(values) != num_levels:
        _fail(key, values, f"has {len(values)} lists; needs 1 or one per level of MODEL.RETINANET.IN_FEATURES ({num_levels})")
    return [list(v) for v in values]


def check_retina_plugin_config(cfg):
    """
    Raise a ValueError naming the key and value of the first setting that RetinaNetPlugin cannot
    honour: its own `MODEL.RETINA_PLUGIN` keys and the Detectron2 keys it reads.
    """
    unknown = sorted(set(cfg.MODEL.RETINA_PLUGIN) - set(_plugin_defaults().MODEL.RETINA_PLUGIN))
    for key in unknown:
        new = MOVED_KEYS.get(key)
        where = f"; it moved to {new}" if new else ""
        _fail(f"MODEL.RETINA_PLUGIN.{key}", cfg.MODEL.RETINA_PLUGIN[key], f"is not a key of MODEL.RETINA_PLUGIN{where}")

    if len(cfg.MODEL.PIXEL_MEAN) != len(cfg.MODEL.PIXEL_STD) or not cfg.MODEL.PIXEL_MEAN:
        _fail("MODEL.PIXEL_STD", cfg.MODEL.PIXEL_STD, f"needs one entry per input channel, as MODEL.PIXEL_MEAN {cfg.MODEL.PIXEL_MEAN!r} has")

    r = cfg.MODEL.RETINANET
    if int(r.NUM_CLASSES) < 1:
        _fail("MODEL.RETINANET.NUM_CLASSES", r.NUM_CLASSES, "must be >= 1")
    if len(r.IN_FEATURES) < 1:
        _fail("MODEL.RETINANET.IN_FEATURES", r.IN_FEATURES, "needs at least one feature level")
    if r.NUM_CONVS < 0:
        _fail("MODEL.RETINANET.NUM_CONVS", r.NUM_CONVS, "must be >= 0")
    if r.NORM not in VALID_HEAD_NORMS:
        _fail("MODEL.RETINANET.NORM", r.NORM, f"must be one of {VALID_HEAD_NORMS}")
    if not 0.0 < r.PRIOR_PROB < 1.0:
        _fail("MODEL.RETINANET.PRIOR_PROB", r.PRIOR_PROB, "must be in (0, 1)")
    if not 0.0 <= r.FOCAL_LOSS_ALPHA <= 1.0 and r.FOCAL_LOSS_ALPHA != -1:
        _fail("MODEL.RETINANET.FOCAL_LOSS_ALPHA", r.FOCAL_LOSS_ALPHA, "must be in [0, 1] (or -1: no alpha)")
    if r.FOCAL_LOSS_GAMMA < 0:
        _fail("MODEL.RETINANET.FOCAL_LOSS_GAMMA", r.FOCAL_LOSS_GAMMA, "must be >= 0")
    _check_matching(r.IOU_THRESHOLDS, r.IOU_LABELS)
    if len(r.BBOX_REG_WEIGHTS) != 4:
        _fail("MODEL.RETINANET.BBOX_REG_WEIGHTS", r.BBOX_REG_WEIGHTS, "needs 4 weights (dx, dy, dw, dh)")
    if r.BBOX_REG_LOSS_TYPE not in VALID_BOX_REG_LOSSES:
        _fail("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", r.BBOX_REG_LOSS_TYPE, f"must be one of {VALID_BOX_REG_LOSSES}")
    if r.SMOOTH_L1_LOSS_BETA < 0:
        _fail("MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", r.SMOOTH_L1_LOSS_BETA, "must be >= 0")
    if not 0.0 <= r.SCORE_THRESH_TEST < 1.0:
        _fail("MODEL.RETINANET.SCORE_THRESH_TEST", r.SCORE_THRESH_TEST, "must be in [0, 1)")
    if r.TOPK_CANDIDATES_TEST < 1:
        _fail("MODEL.RETINANET.TOPK_CANDIDATES_TEST", r.TOPK_CANDIDATES_TEST, "must be >= 1")
    if not 0.0 < r.NMS_THRESH_TEST <= 1.0:
        _fail("MODEL.RETINANET.NMS_THRESH_TEST", r.NMS_THRESH_TEST, "must be in (0, 1]")
    if cfg.TEST.DETECTIONS_PER_IMAGE < 1:
        _fail("TEST.DETECTIONS_PER_IMAGE", cfg.TEST.DETECTIONS_PER_IMAGE, "must be >= 1")
    _check_anchors(cfg)

    node = cfg.MODEL.RETINA_PLUGIN
    if node.P6_SOURCE not in VALID_P6_SOURCES:
        _fail("MODEL.RETINA_PLUGIN.P6_SOURCE", node.P6_SOURCE, f"must be one of {VALID_P6_SOURCES}")
    if not 0.0 <= node.LOSS_NORMALIZER_MOMENTUM < 1.0:
        _fail("MODEL.RETINA_PLUGIN.LOSS_NORMALIZER_MOMENTUM", node.LOSS_NORMALIZER_MOMENTUM, "must be in [0, 1)")
    if node.INFERENCE_DTYPE not in VALID_INFERENCE_DTYPES:
        _fail("MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", node.INFERENCE_DTYPE, f"must be one of {VALID_INFERENCE_DTYPES}")
    if node.INFERENCE_DTYPE == "int8":
        if not node.INT8_CALIBRATION:
            _fail("MODEL.RETINA_PLUGIN.INT8_CALIBRATION", node.INT8_CALIBRATION, "INFERENCE_DTYPE int8 needs the file written by tools/calibrate_int8.py")
        if not cfg.MODEL.DEVICE.startswith("cpu"):
            _fail("MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", node.INFERENCE_DTYPE, f"int8 runs on the CPU, MODEL.DEVICE is {cfg.MODEL.DEVICE!r}")
    if not isinstance(node.COMPILE, bool):
        _fail("MODEL.RETINA_PLUGIN.COMPILE", node.COMPILE, "must be True or False")
    if not isinstance(node.WINOGRAD, bool):
        _fail("MODEL.RETINA_PLUGIN.WINOGRAD", node.WINOGRAD, "must be True or False")
    if node.COMPILE and node.INFERENCE_DTYPE != "float32":
        _fail("MODEL.RETINA_PLUGIN.COMPILE", node.COMPILE, f"compiles the float32 model; INFERENCE_DTYPE is {node.INFERENCE_DTYPE!r}")
    if not isinstance(node.TILE_SIZE, int) or node.TILE_SIZE < 0:
        _fail("MODEL.RETINA_PLUGIN.TILE_SIZE", node.TILE_SIZE, "must be an integer >= 0 (0 = no tiling)")
    tile_stride = node.TILE_SIZE - round(node.TILE_OVERLAP * node.TILE_SIZE)
    if not 0.0 <= node.TILE_OVERLAP < 1.0 or (node.TILE_SIZE > 0 and tile_stride < 1):
        _fail("MODEL.RETINA_PLUGIN.TILE_OVERLAP", node.TILE_OVERLAP, f"must be in [0, 1) and leave tiles of {node.TILE_SIZE} pixels a stride >= 1")
    if not isinstance(node.TILE_BATCH, int) or node.TILE_BATCH < 1:
        _fail("MODEL.RETINA_PLUGIN.TILE_BATCH", node.TILE_BATCH, "must be an integer >= 1")
    if not isinstance(node.TILED_DETECTIONS_PER_IMAGE, int) or node.TILED_DETECTIONS_PER_IMAGE < 0:
        _fail("MODEL.RETINA_PLUGIN.TILED_DETECTIONS_PER_IMAGE", node.TILED_DETECTIONS_PER_IMAGE, "must be an integer >= 0 (0 = no cap)")
    bands = list(node.RASTER_BANDS)
    if bands and (len(bands) != len(cfg.MODEL.PIXEL_MEAN) or not all(isinstance(b, int) and b >= 1 for b in bands)):
        _fail("MODEL.RETINA_PLUGIN.RASTER_BANDS", node.RASTER_BANDS, f"must be [] or {len(cfg.MODEL.PIXEL_MEAN)} band indices >= 1, one per entry of MODEL.PIXEL_MEAN")
    if node.TTA_MERGE not in VALID_TTA_MERGES:
        _fail("MODEL.RETINA_PLUGIN.TTA_MERGE", node.TTA_MERGE, f"must be one of {VALID_TTA_MERGES}")
    if cfg.TEST.AUG.ENABLED:
        check_tta_config(cfg)


def check_tta_config(cfg) -> None:
    """
    Raise a ValueError naming the key when cfg.TEST.AUG (Detectron2's keys: MIN_SIZES, MAX_SIZE,
    FLIP) cannot make the versions of an image; `check_retina_plugin_config` runs it when
    TEST.AUG.ENABLED.
    """
    aug = cfg.TEST.AUG
    sizes = aug.MIN_SIZES
    if not isinstance(sizes, (list, tuple)) or not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"cfg.TEST.AUG.MIN_SIZES = {sizes!r}: must be a list of one or more short-side sizes in pixels (integers > 0)")
    if not isinstance(aug.MAX_SIZE, int) or aug.MAX_SIZE < max(sizes):
        raise ValueError(f"cfg.TEST.AUG.MAX_SIZE = {aug.MAX_SIZE!r}: must be an integer >= the largest of TEST.AUG.MIN_SIZES {tuple(sizes)}")
    if not isinstance(aug.FLIP, bool):
        raise ValueError(f"cfg.TEST.AUG.FLIP = {aug.FLIP!r}: must be True or False")


def _check_matching(thresholds, labels):
    # What detectron2.modeling.matcher.Matcher accepts: thresholds sorted in [0, 1], one more
    # label than thresholds, labels -1 (ignored), 0 (background) or 1 (foreground).
    if not all(isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in thresholds) or list(thresholds) != sorted(thresholds):
        _fail("MODEL.RETINANET.IOU_THRESHOLDS", thresholds, "must be increasing IoUs in [0, 1]")
    if len(labels) != len(thresholds) + 1:
        _fail("MODEL.RETINANET.IOU_LABELS", labels, f"needs one label more than IOU_THRESHOLDS {list(thresholds)}")
    if not all(label in (-1, 0, 1) for label in labels):
        _fail("MODEL.RETINANET.IOU_LABELS", labels, "labels must be -1 (ignored), 0 (background) or 1 (foreground)")


def _check_anchors(cfg):
    a = cfg.MODEL.ANCHOR_GENERATOR
    num_levels = len(cfg.MODEL.RETINANET.IN_FEATURES)
    sizes = anchor_params_per_level(a.SIZES, num_levels, "MODEL.ANCHOR_GENERATOR.SIZES")
    ratios = anchor_params_per_level(a.ASPECT_RATIOS, num_levels, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
    if not 0.0 <= a.OFFSET < 1.0:
        _fail("MODEL.ANCHOR_GENERATOR.OFFSET", a.OFFSET, "must be in [0, 1)")
    if a.NAME in SIZE_TIMES_RATIO_GENERATORS:
        counts = [len(s) * len(r) for s, r in zip(sizes, ratios)]
        if len(set(counts)) != 1:
            _fail(
                "MODEL.ANCHOR_GENERATOR.SIZES",
                a.SIZES,
                f"gives {counts} anchors per level (with ASPECT_RATIOS {a.ASPECT_RATIOS}); the head shares "
                "its weights across levels, so every level needs the same number",
            )


_DEFAULTS = []


def _plugin_defaults():
    if not _DEFAULTS:
        _DEFAULTS.append(get_retina_plugin_cfg())
    return _DEFAULTS[0]


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
