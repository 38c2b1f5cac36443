"""
Detectron2's `DefaultPredictor` for RetinaNetPlugin: one image (a BGR numpy array) in, its
detections out, on a model made ready by `retina_plugin.inference.model` (weights, precision,
test-time augmentation; `TiledPredictor`: tile by tile at native resolution).
"""
import logging
from dataclasses import replace
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from .model import InferenceSettings, inference_model, load_model

__all__ = ["RetinaPredictor", "TiledPredictor", "dataset_metadata"]

logger = logging.getLogger(__name__)


class RetinaPredictor(DefaultPredictor):
    """
    Detectron2's DefaultPredictor on a model made ready by `retina_plugin.inference.model`:
    cfg.MODEL.WEIGHTS loaded with `RetinaCheckpointer` (weights-only `.pth`, restricted `.pkl`),
    its precision (int8 with INT8_CALIBRATION), in eval mode. With cfg.TEST.AUG.ENABLED it
    detects with test-time augmentation (`self.tta`): the versions are resized from the image as
    given, INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST are not used.
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = load_model(self.cfg)
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.settings = InferenceSettings.from_config(cfg)
        self.tta = inference_model(self.model, replace(self.settings, tile_size=0)) if self.settings.tta else None

    def __call__(self, original_image: np.ndarray) -> Dict[str, Instances]:
        """
        Args:
            original_image: an image of shape (H, W, C), uint8, in BGR order (as OpenCV reads it).
        Returns:
            {"instances": Instances} with boxes in the image's pixel coordinates.
        """
        if self.tta is None:
            return super().__call__(original_image)
        image = self._chw_image(original_image)
        return self.tta([{"image": image, "height": image.shape[1], "width": image.shape[2]}])[0]

    def _chw_image(self, original_image: np.ndarray) -> torch.Tensor:
        """(H, W, C) BGR uint8 -> a (C, H, W) uint8 tensor in cfg.INPUT.FORMAT, at the image's own size."""
        if self.input_format == "RGB":
            original_image = original_image[:, :, ::-1]
        # ascontiguousarray copies (as uint8) only a view with negative strides.
        return torch.from_numpy(np.ascontiguousarray(original_image)).permute(2, 0, 1)


class TiledPredictor(RetinaPredictor):
    """
    RetinaPredictor with tiled inference: detects in one image of any size, tile by tile
    (cfg.MODEL.RETINA_PLUGIN.TILE_SIZE, TILE_OVERLAP, TILE_BATCH; `retina_plugin.inference.tiling`).
    Tiles are fed at native resolution: INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST are not used. With
    cfg.TEST.AUG.ENABLED every tile is detected with test-time augmentation (its versions resized
    to TEST.AUG.MIN_SIZES, flipped with FLIP), then the tiles are merged as without it.

    Attributes:
        model (nn.Module): the detector, in eval mode.
        tiled (TiledInference): runs `model` (or its TTA) over the tiles.
    """

    def __init__(self, cfg):
        if cfg.MODEL.RETINA_PLUGIN.TILE_SIZE < 1:
            raise ValueError(
                f"cfg.MODEL.RETINA_PLUGIN.TILE_SIZE = {cfg.MODEL.RETINA_PLUGIN.TILE_SIZE!r}: "
                "TiledPredictor needs a tile size >= 1"
            )
        super().__init__(cfg)
        self.tiled = inference_model(self.model, self.settings)

    def __call__(self, original_image: np.ndarray) -> Dict[str, Instances]:
        """
        Args:
            original_image: an image of shape (H, W, C), uint8, in BGR order (as OpenCV reads
                it); turned into RGB when cfg.INPUT.FORMAT is "RGB", as DefaultPredictor does.
        Returns:
            {"instances": Instances} with boxes in the image's pixel coordinates.
        """
        # Tiles are sliced from the uint8 image and made float one batch at a time.
        return {"instances": self.tiled.detect(self._chw_image(original_image))}


def dataset_metadata(cfg, class_names: Optional[Sequence[str]] = None) -> Metadata:
    """
    The metadata (class names, colors) used to label detections. `class_names` are the model's
    own (the checkpoint's "class_names", `model.class_names`); the metadata of
    `cfg.DATASETS.TEST[0]` is used when that dataset is registered, names at least
    `cfg.MODEL.RETINANET.NUM_CLASSES` classes and, where the model has names, the same ones.
    Otherwise the model's names, else empty metadata (labels show class ids, with a warning).
    """
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    own = list(class_names) if class_names and len(class_names) >= num_classes else None
    name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    if name is not None and name in DatasetCatalog.list():
        metadata = MetadataCatalog.get(name)
        thing_classes = metadata.get("thing_classes", None)
        if thing_classes is not None and len(thing_classes) >= num_classes and (own is None or list(thing_classes) == own):
            return metadata
        if own is None:
            logger.warning(f"Dataset '{name}' names {len(thing_classes or [])} classes but the model has {num_classes}; labels show class ids.")
        else:
            logger.warning(f"Dataset '{name}' names classes {thing_classes}; labelling with the model's own {own}.")
    elif name is not None and own is None:
        logger.warning(f"Dataset '{name}' of cfg.DATASETS.TEST is not registered; labels show class ids.")
    if own is not None:
        return Metadata(name="", thing_classes=own)
    return Metadata(name="")
