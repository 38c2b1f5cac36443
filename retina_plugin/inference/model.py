"""
Get a model ready for use, in one place that every path calls: the trainer's evaluation, the
LazyConfig evaluation, the predictor and demo, calibration, export, the analysis tools,
predict_raster, the Python API and the benchmarks.

    model = load_model(cfg)                      # built, weights loaded, its precision, eval mode
    runner = inference_model(model, InferenceSettings.from_config(cfg))   # + TTA, + tiling

`load_model` reads a YAML (yacs) config; `load_lazy_model` the same from a LazyConfig, whose
optional top-level `inference` node holds the `InferenceSettings` (`configs/common/
retinanet_plugin.py`). Both end in `ready_model`, so every `MODEL.RETINA_PLUGIN` key acts the
same on every path:

- precision: the model's `inference_dtype` ("float32"; "bfloat16" / "float16" run by the model
  under autocast; "int8": the convolutions swapped with the ranges of `int8_calibration`,
  MODEL.RETINA_PLUGIN.INT8_CALIBRATION);
- test-time augmentation (TEST.AUG.*, MODEL.RETINA_PLUGIN.TTA_MERGE) and tiling
  (MODEL.RETINA_PLUGIN.TILE_*): wrappers with the model's own inputs and outputs.
"""
import copy
import logging
from dataclasses import dataclass, field
from typing import Tuple

from torch import nn
from detectron2.modeling import build_model
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA

from ..config import VALID_TILE_MERGES, VALID_TTA_MERGES
from ..weights.checkpoint import RetinaCheckpointer
from .int8 import load_int8_calibration, quantize_int8
from .tiling import TiledInference
from .tta import RetinaNetWithTTA

__all__ = ["InferenceSettings", "load_model", "load_lazy_model", "ready_model", "with_precision", "inference_model", "unwrap"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSettings:
    """
    What wraps a loaded model for use, with the config key each field comes from. A LazyConfig
    sets them as `inference = L(InferenceSettings)(tile_size=512, ...)`.
    """

    int8_calibration: str = ""  # MODEL.RETINA_PLUGIN.INT8_CALIBRATION (read when the model's dtype is int8)
    tile_size: int = 0  # MODEL.RETINA_PLUGIN.TILE_SIZE; 0 = whole images
    tile_overlap: float = 0.2  # TILE_OVERLAP
    tile_batch: int = 4  # TILE_BATCH
    tiled_detections_per_image: int = 0  # TILED_DETECTIONS_PER_IMAGE; 0 = no cap
    tile_resize: Tuple[int, ...] = ()  # TILE_RESIZE; () = tiles at native resolution, else (min_size, max_size)
    tile_merge: str = "edges"  # TILE_MERGE
    tile_nms_thresh: float = 0.0  # TILE_NMS_THRESH; 0.0 = the model's NMS threshold
    tta: bool = False  # TEST.AUG.ENABLED
    tta_min_sizes: Tuple[int, ...] = field(default=(400, 500, 600, 700, 800, 900, 1000, 1100, 1200))  # TEST.AUG.MIN_SIZES
    tta_max_size: int = 4000  # TEST.AUG.MAX_SIZE
    tta_flip: bool = True  # TEST.AUG.FLIP
    tta_merge: str = "nms"  # MODEL.RETINA_PLUGIN.TTA_MERGE

    def __post_init__(self):
        object.__setattr__(self, "tta_min_sizes", tuple(self.tta_min_sizes))
        object.__setattr__(self, "tile_resize", tuple(self.tile_resize))
        checks = [
            (self.tile_size >= 0, "tile_size", "must be >= 0"),
            (0.0 <= self.tile_overlap < 1.0, "tile_overlap", "must be in [0, 1)"),
            (self.tile_batch >= 1, "tile_batch", "must be >= 1"),
            (self.tiled_detections_per_image >= 0, "tiled_detections_per_image", "must be >= 0"),
            (len(self.tile_resize) in (0, 2) and all(s > 0 for s in self.tile_resize), "tile_resize", "must be () or (min_size, max_size) > 0"),
            (not (self.tile_resize and self.tta), "tile_resize", "resizes every tile; with tta the versions are resized to tta_min_sizes instead: use one"),
            (self.tile_merge in VALID_TILE_MERGES, "tile_merge", f"must be one of {VALID_TILE_MERGES}"),
            (0.0 <= self.tile_nms_thresh <= 1.0, "tile_nms_thresh", "must be in [0, 1]"),
            (self.tta_merge in VALID_TTA_MERGES, "tta_merge", f"must be one of {VALID_TTA_MERGES}"),
            (len(self.tta_min_sizes) > 0 and min(self.tta_min_sizes) > 0, "tta_min_sizes", "must be one or more sizes > 0"),
            (not self.tta_min_sizes or self.tta_max_size >= max(self.tta_min_sizes), "tta_max_size", "must be >= the largest of tta_min_sizes"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"inference.{name} = {getattr(self, name)!r}: {why}")

    @classmethod
    def from_config(cls, cfg) -> "InferenceSettings":
        """The settings of a YAML config: MODEL.RETINA_PLUGIN's inference keys and TEST.AUG."""
        node, aug = cfg.MODEL.RETINA_PLUGIN, cfg.TEST.AUG
        return cls(
            int8_calibration=node.INT8_CALIBRATION, tile_size=node.TILE_SIZE, tile_overlap=node.TILE_OVERLAP,
            tile_batch=node.TILE_BATCH, tiled_detections_per_image=node.TILED_DETECTIONS_PER_IMAGE,
            tile_resize=tuple(node.TILE_RESIZE), tile_merge=node.TILE_MERGE, tile_nms_thresh=node.TILE_NMS_THRESH,
            tta=aug.ENABLED, tta_min_sizes=tuple(aug.MIN_SIZES), tta_max_size=aug.MAX_SIZE, tta_flip=aug.FLIP,
            tta_merge=node.TTA_MERGE,
        )  # fmt: skip


def load_model(cfg, weights: str = None) -> nn.Module:
    """
    The model of a YAML config, ready: built (on MODEL.DEVICE), `weights` (default
    MODEL.WEIGHTS; "" keeps the initialization) loaded through `RetinaCheckpointer`, given its
    precision (MODEL.RETINA_PLUGIN.INFERENCE_DTYPE, INT8_CALIBRATION), in eval mode.
    """
    model = build_model(cfg)
    return ready_model(model, cfg.MODEL.WEIGHTS if weights is None else weights, InferenceSettings.from_config(cfg))


def load_lazy_model(cfg, weights: str = None) -> nn.Module:
    """`load_model` for a LazyConfig: cfg.model on cfg.train.device, `weights` default cfg.train.init_checkpoint."""
    from detectron2.config import instantiate

    model = instantiate(cfg.model).to(cfg.train.device)
    return ready_model(model, cfg.train.init_checkpoint if weights is None else weights, lazy_inference_settings(cfg))


def lazy_inference_settings(cfg) -> InferenceSettings:
    """The `inference` node of a LazyConfig (an InferenceSettings LazyCall or a dict of its fields), or the defaults."""
    from detectron2.config import instantiate

    node = cfg.get("inference", None)
    if node is None:
        return InferenceSettings()
    built = instantiate(node)
    return built if isinstance(built, InferenceSettings) else InferenceSettings(**built)


def ready_model(model: nn.Module, weights: str, settings: InferenceSettings) -> nn.Module:
    """
    A built model with `weights` loaded ("" keeps its initialization), in eval mode, given its
    precision; `model.class_names` holds the class names the checkpoint records (None if none).
    """
    model.class_names = None
    if weights:
        model.class_names = RetinaCheckpointer(model).load(weights).get("class_names")
    model.eval()
    return with_precision(model, settings)


def with_precision(model: nn.Module, settings: InferenceSettings, copy_first: bool = False) -> nn.Module:
    """
    `model` (weights loaded) at its `inference_dtype`: made int8 with the ranges of
    `settings.int8_calibration` when that dtype is "int8" (in place, or on a copy with
    `copy_first`, for a model that goes on training); unchanged otherwise (float32, and the
    autocast dtypes the model applies itself).
    """
    model = unwrap(model)
    if getattr(model, "inference_dtype", "float32") != "int8" or getattr(model, "int8", False):
        return model
    if copy_first:
        model = copy.deepcopy(model).eval()
    ranges = load_int8_calibration(settings.int8_calibration, model)
    return quantize_int8(model, ranges, source=settings.int8_calibration)


def inference_model(model: nn.Module, settings: InferenceSettings, tta: bool = None) -> nn.Module:
    """
    `model` wrapped for use as `settings` say, keeping Detectron2's model inputs and outputs:
    with test-time augmentation (`tta`, default `settings.tta`) each image, or with tiling
    (`settings.tile_size` > 0) each tile; both: TTA on every tile. The tiles' boxes are rotated
    when the model's anchor generator's are (box_dim 5, Detectron2's RotatedAnchorGenerator).
    """
    tta = settings.tta if tta is None else tta
    runner = model
    if tta:
        postprocess = unwrap(model).postprocess
        mapper = DatasetMapperTTA(min_sizes=settings.tta_min_sizes, max_size=settings.tta_max_size, flip=settings.tta_flip)
        runner = RetinaNetWithTTA(
            model, tta_mapper=mapper, merge=settings.tta_merge, nms_thresh=postprocess.nms_thresh,
            detections_per_image=postprocess.detections_per_image,
        )  # fmt: skip
        logger.info(runner.describe())
    if settings.tile_size > 0:
        runner = TiledInference(
            runner, tile_size=settings.tile_size, overlap=settings.tile_overlap, tile_batch=settings.tile_batch,
            nms_thresh=settings.tile_nms_thresh or unwrap(model).postprocess.nms_thresh,
            detections_per_image=settings.tiled_detections_per_image, resize=settings.tile_resize, merge=settings.tile_merge,
            box_dim=unwrap(model).anchor_generator.box_dim,
        )  # fmt: skip
    return runner


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or any wrapper with `.module`)."""
    return model.module if hasattr(model, "module") else model
