"""
The checks of a loaded config: every `MODEL.RETINA_PLUGIN` key and every Detectron2 key that
RetinaNetPlugin reads, each failure a ValueError naming the key and its value.
"""
import collections.abc
import functools

from ..modeling.backbone import P6_SOURCES as VALID_P6_SOURCES
from ..modeling.box_transform import box_dim, is_rotated
from ..modeling.head import BOX_REG_LOSSES as VALID_BOX_REG_LOSSES
from ..modeling.meta_arch import VALID_INFERENCE_DTYPES
from .keys import MOVED_KEYS, VALID_TILE_MERGES, VALID_TTA_MERGES, add_retina_plugin_config

# The norms detectron2.layers.get_norm builds; "BN" and "SyncBN" become one norm per level.
VALID_HEAD_NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")
# The anchor generators whose anchor count per level follows from SIZES x ASPECT_RATIOS, so it
# can be checked when the config is loaded; others are checked when the model is built.
SIZE_TIMES_RATIO_GENERATORS = ("DefaultAnchorGenerator", "RetinaAnchorGenerator", "TorchvisionAnchorGenerator")


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
    unknown = sorted(set(cfg.MODEL.RETINA_PLUGIN) - _plugin_keys())
    for key in unknown:
        new = MOVED_KEYS.get(key)
        where = f"; it moved to {new}" if new else ""
        _fail(f"MODEL.RETINA_PLUGIN.{key}", cfg.MODEL.RETINA_PLUGIN[key], f"is not a key of MODEL.RETINA_PLUGIN{where}")
    _check_detectron2_keys(cfg)
    _check_plugin_keys(cfg)
    if cfg.TEST.AUG.ENABLED:
        check_tta_config(cfg)


def _check_detectron2_keys(cfg):
    """The Detectron2 keys RetinaNetPlugin reads: MODEL.PIXEL_*, MODEL.RETINANET, TEST.DETECTIONS_PER_IMAGE, anchors."""
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
    if len(r.BBOX_REG_WEIGHTS) != box_dim(cfg):
        deltas = "(dx, dy, dw, dh, da)" if box_dim(cfg) == 5 else "(dx, dy, dw, dh)"
        _fail(
            "MODEL.RETINANET.BBOX_REG_WEIGHTS", r.BBOX_REG_WEIGHTS,
            f"needs {box_dim(cfg)} weights {deltas} with MODEL.ANCHOR_GENERATOR.NAME {cfg.MODEL.ANCHOR_GENERATOR.NAME}",
        )
    if r.BBOX_REG_LOSS_TYPE not in VALID_BOX_REG_LOSSES:
        _fail("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", r.BBOX_REG_LOSS_TYPE, f"must be one of {VALID_BOX_REG_LOSSES}")
    if is_rotated(cfg) and r.BBOX_REG_LOSS_TYPE != "smooth_l1":
        # Detectron2's giou/diou/ciou losses take XYXY boxes; rotated boxes regress (dx, dy, dw, dh, da).
        _fail(
            "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", r.BBOX_REG_LOSS_TYPE,
            f"is a loss of horizontal boxes; with MODEL.ANCHOR_GENERATOR.NAME {cfg.MODEL.ANCHOR_GENERATOR.NAME} use smooth_l1",
        )
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


def _check_plugin_keys(cfg):
    """The values of MODEL.RETINA_PLUGIN's keys, and what they need of the others."""
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
    if not isinstance(node.WINOGRAD, bool) and node.WINOGRAD != "auto":
        _fail("MODEL.RETINA_PLUGIN.WINOGRAD", node.WINOGRAD, 'must be "auto", True or False')
    if node.COMPILE and node.INFERENCE_DTYPE != "float32":
        _fail("MODEL.RETINA_PLUGIN.COMPILE", node.COMPILE, f"compiles the float32 model; INFERENCE_DTYPE is {node.INFERENCE_DTYPE!r}")
    if not isinstance(node.TILE_SIZE, int) or node.TILE_SIZE < 0:
        _fail("MODEL.RETINA_PLUGIN.TILE_SIZE", node.TILE_SIZE, "must be an integer >= 0 (0 = no tiling)")
    # Tiles share floor(TILE_SIZE * TILE_OVERLAP) pixels (inference.tiles.tile_starts): any
    # overlap below 1 leaves a stride >= 1.
    if not 0.0 <= node.TILE_OVERLAP < 1.0:
        _fail("MODEL.RETINA_PLUGIN.TILE_OVERLAP", node.TILE_OVERLAP, "must be in [0, 1)")
    if not isinstance(node.TILE_BATCH, int) or node.TILE_BATCH < 1:
        _fail("MODEL.RETINA_PLUGIN.TILE_BATCH", node.TILE_BATCH, "must be an integer >= 1")
    if not isinstance(node.TILED_DETECTIONS_PER_IMAGE, int) or node.TILED_DETECTIONS_PER_IMAGE < 0:
        _fail("MODEL.RETINA_PLUGIN.TILED_DETECTIONS_PER_IMAGE", node.TILED_DETECTIONS_PER_IMAGE, "must be an integer >= 0 (0 = no cap)")
    _check_tile_merge_and_resize(cfg)
    bands = list(node.RASTER_BANDS)
    if bands and (len(bands) != len(cfg.MODEL.PIXEL_MEAN) or not all(isinstance(b, int) and b >= 1 for b in bands)):
        _fail("MODEL.RETINA_PLUGIN.RASTER_BANDS", node.RASTER_BANDS, f"must be [] or {len(cfg.MODEL.PIXEL_MEAN)} band indices >= 1, one per entry of MODEL.PIXEL_MEAN")
    if node.TTA_MERGE not in VALID_TTA_MERGES:
        _fail("MODEL.RETINA_PLUGIN.TTA_MERGE", node.TTA_MERGE, f"must be one of {VALID_TTA_MERGES}")


def _check_tile_merge_and_resize(cfg):
    """TILE_RESIZE, TILE_MERGE, TILE_NMS_THRESH."""
    node = cfg.MODEL.RETINA_PLUGIN
    resize = list(node.TILE_RESIZE)
    if resize and (len(resize) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in resize) or resize[1] < resize[0]):
        _fail("MODEL.RETINA_PLUGIN.TILE_RESIZE", node.TILE_RESIZE, "must be [] (no resize) or [MIN_SIZE, MAX_SIZE], integers with 0 < MIN_SIZE <= MAX_SIZE")
    if resize and cfg.TEST.AUG.ENABLED:
        _fail("MODEL.RETINA_PLUGIN.TILE_RESIZE", node.TILE_RESIZE, "resizes every tile; test-time augmentation (TEST.AUG.ENABLED) resizes them to TEST.AUG.MIN_SIZES instead: use one")
    if node.TILE_MERGE not in VALID_TILE_MERGES:
        _fail("MODEL.RETINA_PLUGIN.TILE_MERGE", node.TILE_MERGE, f"must be one of {VALID_TILE_MERGES}")
    if not 0.0 <= node.TILE_NMS_THRESH <= 1.0:
        _fail("MODEL.RETINA_PLUGIN.TILE_NMS_THRESH", node.TILE_NMS_THRESH, "must be in (0, 1], or 0.0 for MODEL.RETINANET.NMS_THRESH_TEST")


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
    if a.NAME in SIZE_TIMES_RATIO_GENERATORS or is_rotated(cfg):
        counts = [len(s) * len(r) for s, r in zip(sizes, ratios)]
        with_angles = ""
        if is_rotated(cfg):
            angles = _angles_per_level(a.ANGLES, num_levels)
            counts = [n * len(angles_i) for n, angles_i in zip(counts, angles)]
            with_angles = f" and ANGLES {a.ANGLES}"
        if len(set(counts)) != 1:
            _fail(
                "MODEL.ANCHOR_GENERATOR.SIZES",
                a.SIZES,
                f"gives {counts} anchors per level (with ASPECT_RATIOS {a.ASPECT_RATIOS}{with_angles}); the head shares "
                "its weights across levels, so every level needs the same number",
            )


def _angles_per_level(angles, num_levels: int):
    """MODEL.ANCHOR_GENERATOR.ANGLES read as Detectron2's RotatedAnchorGenerator reads it (as SIZES): one list per level."""
    def is_angle_list(values):
        return (
            isinstance(values, collections.abc.Sequence) and len(values) > 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and -180 <= v <= 180 for v in values)
        )  # fmt: skip

    if is_angle_list(angles):
        return [list(angles)] * num_levels
    if not angles or not all(is_angle_list(v) for v in angles) or len(angles) not in (1, num_levels):
        _fail(
            "MODEL.ANCHOR_GENERATOR.ANGLES", angles,
            f"must be a list of angles in degrees in [-180, 180], or of such lists (1 or one per level: {num_levels})",
        )
    return [list(angles[0])] * num_levels if len(angles) == 1 else [list(v) for v in angles]


@functools.lru_cache(maxsize=1)
def _plugin_keys() -> frozenset:
    """The keys of MODEL.RETINA_PLUGIN, as add_retina_plugin_config defines them."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_retina_plugin_config(cfg)
    return frozenset(cfg.MODEL.RETINA_PLUGIN)
