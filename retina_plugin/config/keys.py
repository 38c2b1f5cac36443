"""
The keys the plugin adds to Detectron2's config: `cfg.MODEL.RETINA_PLUGIN` (with a comment on
every key), `cfg.DATALOADER.SKIP_UNREADABLE_IMAGES`, the keys that moved to Detectron2's own
nodes, and the values the checks accept.
"""
from detectron2.config import CfgNode as CN

# How test-time augmentation merges the versions' candidates (retina_plugin.inference.tta).
VALID_TTA_MERGES = ("nms", "wbf")
# How tiled inference merges its tiles (retina_plugin.inference.tiling).
VALID_TILE_MERGES = ("edges", "deepforest")

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


def add_retina_plugin_config(cfg):  # one commented line per key: longer than 60 lines by design
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
    # and Detectron2) or "p5" (P5: FCOS, torchvision v1 and DeepForest; torchvision v2 takes C5).
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
    # out may run as Winograd F(4x4, 3x3) (retina_plugin.modeling.winograd), 1.2-2.5x faster per
    # convolution; outputs within float rounding of the direct convolution (~1e-5 relative per
    # layer), the same detections. "auto": per convolution shape, Winograd or direct and its
    # chunk size as measured on this machine at the first inference of that shape, cached per
    # CPU model, torch version and thread count under ~/.cache/retina_plugin
    # (modeling/winograd_tuning.py). True: Winograd by the static rules (winograd.pays_per_call).
    # False: oneDNN's direct convolution, bit for bit. GPUs (cuDNN picks its own algorithm),
    # training, bfloat16, int8, export and COMPILE do not use it.
    node.WINOGRAD = "auto"

    # Tiled inference for large images (retina_plugin.inference.tiling). Side of the square tiles in
    # pixels, cut from the image at its own resolution; 0 = off. When > 0, tiled
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
    # [] = tiles go to the network at native resolution; [MIN_SIZE, MAX_SIZE] = each tile is
    # resized first as torchvision's GeneralizedRCNNTransform(MIN_SIZE, MAX_SIZE) resizes an
    # image (bilinear, floor of side * scale), e.g. DeepForest's [800, 1333]. Not with TTA.
    node.TILE_RESIZE = []
    # How the tiles' detections are merged: "edges" (each object from the tile that sees it
    # whole, class-wise NMS where tiles overlap) or "deepforest" (DeepForest's mosaic: corners
    # cut to whole pixels, one NMS over all tiles' boxes of all classes).
    node.TILE_MERGE = "edges"
    # IoU threshold of the NMS that merges the tiles; 0.0 = MODEL.RETINANET.NMS_THRESH_TEST.
    node.TILE_NMS_THRESH = 0.0

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
