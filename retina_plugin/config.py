"""The plugin's config node, `cfg.MODEL.RETINA_PLUGIN`, its checks, and `load_config`."""
import os
from typing import Optional, Sequence

from detectron2.config import CfgNode as CN

VALID_NORMS = ("", "GN", "BN", "SyncBN")
VALID_P6_SOURCES = ("res5", "p5")
VALID_BOX_REG_LOSSES = ("smooth_l1", "giou")
VALID_INFERENCE_DTYPES = ("float32", "bfloat16", "float16", "int8")


def add_retina_plugin_config(cfg):
    """
    Add `cfg.MODEL.RETINA_PLUGIN`, every hyperparameter of RetinaNet (Lin et al. 2017),
    to a Detectron2 config. Defaults are the paper's.
    """
    _C = cfg
    # Training data (retina_plugin.data.loader): an image file that is missing or cannot be
    # decoded stops the run naming the file and its dataset; True logs it, counts it and
    # trains without it. Evaluation always stops (it must cover every image).
    _C.DATALOADER.SKIP_UNREADABLE_IMAGES = False

    _C.MODEL.RETINA_PLUGIN = CN()
    node = _C.MODEL.RETINA_PLUGIN

    # Number of object classes (background is not a class: the classifier is sigmoid per class).
    node.NUM_CLASSES = 80
    # Backbone features the head runs on, from high to low resolution (strides 8..128).
    node.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Input of the P6 conv: "res5" (C5, the paper and Detectron2) or "p5" (FCOS, torchvision v2).
    node.P6_SOURCE = "res5"

    # Anchors (paper section 4): one base size per level of IN_FEATURES (32..512 on P3..P7),
    # each multiplied by every octave scale (2^0, 2^(1/3), 2^(2/3)) and combined with every
    # aspect ratio (height / width), so A = len(OCTAVE_SCALES) * len(ASPECT_RATIOS) = 9.
    node.ANCHOR_SIZES = [32, 64, 128, 256, 512]
    node.ANCHOR_OCTAVE_SCALES = [2 ** (i / 3) for i in range(3)]
    node.ANCHOR_ASPECT_RATIOS = [0.5, 1.0, 2.0]
    # Anchor centres sit at (offset + i) * stride; Detectron2's RetinaNet uses 0.0.
    node.ANCHOR_OFFSET = 0.0

    # Registry name of the head (RETINA_HEAD_REGISTRY) and of the postprocessor
    # (RETINA_POSTPROCESS_REGISTRY).
    node.HEAD_NAME = "FocalLossHead"
    node.POSTPROCESS_NAME = "DecodeAndNMS"
    # Convs (3x3, ReLU) in each of the classification and box subnets.
    node.NUM_CONVS = 4
    # Norm after each subnet conv: "" (paper), "GN", or "BN"/"SyncBN" (one BN per level).
    node.NORM = ""
    # Initial foreground probability pi of the classifier; its bias is -log((1 - pi) / pi).
    node.PRIOR_PROB = 0.01

    # Focal loss FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t); alpha_t = 1 - alpha on background.
    node.FOCAL_LOSS_ALPHA = 0.25
    node.FOCAL_LOSS_GAMMA = 2.0

    # Anchor matching: IoU >= FG_IOU_THRESHOLD is foreground, < BG_IOU_THRESHOLD background,
    # in between ignored. Each ground-truth box also keeps its best anchor(s) when
    # ALLOW_LOW_QUALITY_MATCHES.
    node.BG_IOU_THRESHOLD = 0.4
    node.FG_IOU_THRESHOLD = 0.5
    node.ALLOW_LOW_QUALITY_MATCHES = True

    # Box regression: weights of the (dx, dy, dw, dh) deltas, and the loss: "smooth_l1" or "giou".
    node.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    node.BBOX_REG_LOSS_TYPE = "smooth_l1"
    # Smooth L1 beta; 0.11 is the paper's (sigma = 3), 0.0 is plain L1 (Detectron2's configs).
    node.SMOOTH_L1_BETA = 0.11

    # Both losses are divided by an exponential moving average of the foreground anchor count:
    # normalizer = MOMENTUM * normalizer + (1 - MOMENTUM) * max(num_fg, 1), starting at INIT.
    # MOMENTUM = 0.0 divides by the batch's own count (the paper).
    node.LOSS_NORMALIZER_MOMENTUM = 0.9
    node.LOSS_NORMALIZER_INIT = 100.0

    # Inference (paper section 4): per level keep scores > SCORE_THRESH_TEST, then the best
    # TOPK_CANDIDATES_TEST (anchor, class) pairs; class-wise NMS at NMS_THRESH_TEST; keep the
    # best DETECTIONS_PER_IMAGE.
    node.SCORE_THRESH_TEST = 0.05
    node.TOPK_CANDIDATES_TEST = 1000
    node.NMS_THRESH_TEST = 0.5
    node.DETECTIONS_PER_IMAGE = 100

    # Speed, not results. Convolutions in NHWC memory layout (faster CPU and cuDNN kernels).
    node.CHANNELS_LAST = True
    # Precision of backbone and head at inference: "float32", or opt-in "bfloat16" (CPUs with
    # AVX-512 BF16 / AMX, and GPUs) or "float16" (GPUs), run under torch.autocast, or "int8"
    # (CPU only: oneDNN int8 convolutions, retina_plugin.quantization) with the activation
    # ranges in INT8_CALIBRATION. Decoding and NMS stay float32. Training is unaffected.
    node.INFERENCE_DTYPE = "float32"
    # JSON file of activation ranges written by tools/calibrate_int8.py for these weights;
    # read when INFERENCE_DTYPE is "int8".
    node.INT8_CALIBRATION = ""

    # Tiled inference for large images (retina_plugin.tiling). Side of the square tiles in
    # pixels, fed at the image's own resolution (no resize); 0 = off. When > 0, tiled
    # evaluation needs INPUT.MIN_SIZE_TEST 0, and DETECTIONS_PER_IMAGE caps each tile and the image.
    node.TILE_SIZE = 0
    # Fraction of TILE_SIZE shared by neighbouring tiles, in [0, 1): an object is seen whole by
    # some tile when it is smaller than about TILE_OVERLAP * TILE_SIZE.
    node.TILE_OVERLAP = 0.2
    # Tiles per forward pass: memory grows with TILE_BATCH * TILE_SIZE^2, not with the image.
    node.TILE_BATCH = 4


def _fail(key, value, why):
    raise ValueError(f"cfg.MODEL.RETINA_PLUGIN.{key} = {value!r}: {why}")


def check_retina_plugin_config(cfg):
    """
    Raise a ValueError naming the key and value of the first setting in
    `cfg.MODEL.RETINA_PLUGIN` that cannot build a working model.
    """
    node = cfg.MODEL.RETINA_PLUGIN
    if int(node.NUM_CLASSES) < 1:
        _fail("NUM_CLASSES", node.NUM_CLASSES, "must be >= 1")
    if len(node.IN_FEATURES) < 1:
        _fail("IN_FEATURES", node.IN_FEATURES, "needs at least one feature level")
    if len(node.ANCHOR_SIZES) != len(node.IN_FEATURES) or not all(
        isinstance(s, (int, float)) and s > 0 for s in node.ANCHOR_SIZES
    ):
        _fail(
            "ANCHOR_SIZES",
            node.ANCHOR_SIZES,
            f"needs one positive base size per level of IN_FEATURES {list(node.IN_FEATURES)}",
        )
    for key in ("ANCHOR_OCTAVE_SCALES", "ANCHOR_ASPECT_RATIOS"):
        values = node[key]
        if len(values) < 1 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
            _fail(key, values, "must be a non-empty list of positive numbers")
    if node.P6_SOURCE not in VALID_P6_SOURCES:
        _fail("P6_SOURCE", node.P6_SOURCE, f"must be one of {VALID_P6_SOURCES}")
    if node.NORM not in VALID_NORMS:
        _fail("NORM", node.NORM, f"must be one of {VALID_NORMS}")
    if node.NUM_CONVS < 0:
        _fail("NUM_CONVS", node.NUM_CONVS, "must be >= 0")
    if not 0.0 < node.PRIOR_PROB < 1.0:
        _fail("PRIOR_PROB", node.PRIOR_PROB, "must be in (0, 1)")
    if not 0.0 <= node.FOCAL_LOSS_ALPHA <= 1.0 and node.FOCAL_LOSS_ALPHA != -1:
        _fail("FOCAL_LOSS_ALPHA", node.FOCAL_LOSS_ALPHA, "must be in [0, 1] (or -1: no alpha)")
    if node.FOCAL_LOSS_GAMMA < 0:
        _fail("FOCAL_LOSS_GAMMA", node.FOCAL_LOSS_GAMMA, "must be >= 0")
    if not 0.0 <= node.BG_IOU_THRESHOLD <= node.FG_IOU_THRESHOLD <= 1.0:
        _fail(
            "BG_IOU_THRESHOLD",
            node.BG_IOU_THRESHOLD,
            f"needs 0 <= BG_IOU_THRESHOLD <= FG_IOU_THRESHOLD ({node.FG_IOU_THRESHOLD}) <= 1",
        )
    if len(node.BBOX_REG_WEIGHTS) != 4:
        _fail("BBOX_REG_WEIGHTS", node.BBOX_REG_WEIGHTS, "needs 4 weights (dx, dy, dw, dh)")
    if node.BBOX_REG_LOSS_TYPE not in VALID_BOX_REG_LOSSES:
        _fail("BBOX_REG_LOSS_TYPE", node.BBOX_REG_LOSS_TYPE, f"must be one of {VALID_BOX_REG_LOSSES}")
    if node.SMOOTH_L1_BETA < 0:
        _fail("SMOOTH_L1_BETA", node.SMOOTH_L1_BETA, "must be >= 0")
    if not 0.0 <= node.LOSS_NORMALIZER_MOMENTUM < 1.0:
        _fail("LOSS_NORMALIZER_MOMENTUM", node.LOSS_NORMALIZER_MOMENTUM, "must be in [0, 1)")
    if not 0.0 <= node.SCORE_THRESH_TEST < 1.0:
        _fail("SCORE_THRESH_TEST", node.SCORE_THRESH_TEST, "must be in [0, 1)")
    if node.TOPK_CANDIDATES_TEST < 1:
        _fail("TOPK_CANDIDATES_TEST", node.TOPK_CANDIDATES_TEST, "must be >= 1")
    if not 0.0 < node.NMS_THRESH_TEST <= 1.0:
        _fail("NMS_THRESH_TEST", node.NMS_THRESH_TEST, "must be in (0, 1]")
    if node.INFERENCE_DTYPE not in VALID_INFERENCE_DTYPES:
        _fail("INFERENCE_DTYPE", node.INFERENCE_DTYPE, f"must be one of {VALID_INFERENCE_DTYPES}")
    if node.INFERENCE_DTYPE == "int8":
        if not node.INT8_CALIBRATION:
            _fail("INT8_CALIBRATION", node.INT8_CALIBRATION, "INFERENCE_DTYPE int8 needs the file written by tools/calibrate_int8.py")
        if not cfg.MODEL.DEVICE.startswith("cpu"):
            _fail("INFERENCE_DTYPE", node.INFERENCE_DTYPE, f"int8 runs on the CPU, MODEL.DEVICE is {cfg.MODEL.DEVICE!r}")
    if node.DETECTIONS_PER_IMAGE < 1:
        _fail("DETECTIONS_PER_IMAGE", node.DETECTIONS_PER_IMAGE, "must be >= 1")
    if not isinstance(node.TILE_SIZE, int) or node.TILE_SIZE < 0:
        _fail("TILE_SIZE", node.TILE_SIZE, "must be an integer >= 0 (0 = no tiling)")
    tile_stride = node.TILE_SIZE - round(node.TILE_OVERLAP * node.TILE_SIZE)
    if not 0.0 <= node.TILE_OVERLAP < 1.0 or (node.TILE_SIZE > 0 and tile_stride < 1):
        _fail("TILE_OVERLAP", node.TILE_OVERLAP, f"must be in [0, 1) and leave tiles of {node.TILE_SIZE} pixels a stride >= 1")
    if not isinstance(node.TILE_BATCH, int) or node.TILE_BATCH < 1:
        _fail("TILE_BATCH", node.TILE_BATCH, "must be an integer >= 1")


class ConfigError(ValueError):
    """A config file or KEY VALUE option that cannot be used; the message names the file and key."""


def load_config(config_file: Optional[str] = None, opts: Sequence = ()) -> CN:
    """
    The config every tool uses: Detectron2's defaults with `cfg.MODEL.RETINA_PLUGIN`, then
    `config_file`, then `opts` (KEY VALUE pairs), checked before anything is built. An unknown
    key, a wrong type or an out-of-range value raises ConfigError naming the key (and the file).
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
