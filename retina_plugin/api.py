"""
RetinaNetPlugin from Python, as short as a notebook wants it, on the same layer as the tools:

    from retina_plugin.api import Detector

    detector = Detector.from_config("configs/retinanet_R50.yaml", weights="model_final.pth")
    instances = detector.predict("image.jpg")            # Detectron2 Instances, boxes in the image's pixels
    table = detector.predict_frame("image.jpg")          # xmin, ymin, xmax, ymax, score, label (pandas);
                                                         # a rotated model: cx, cy, w, h, angle, score, label
    crowns = detector.predict_raster("scene.tif")        # polygons in the raster's CRS (GeoDataFrame)
    results = detector.evaluate(("val.json", "val/"))    # COCO box AP, as train_net's evaluation

Every setting of the config acts as it does in the tools (`retina_plugin.inference.model`:
weights, precision, test-time augmentation, tiling); `Detector.from_config` takes a YAML file
or a CfgNode, Detectron2's KEY VALUE options and the weights. Class names travel with the model:
a checkpoint written by training records them, and detections are labelled by them.
"""
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Instances

from .config import load_config, merge_options
from .data.catalog import check_dataset_files, register_config_datasets
from .data.coco_json import register_coco_json
from .inference.evaluation import evaluate
from .inference.media import read_bgr_image
from .inference.model import inference_model
from .inference.predictor import RetinaPredictor, TiledPredictor, dataset_metadata
from .inference.tiling_checks import check_tiled_evaluation
from .modeling.box_transform import is_rotated

__all__ = ["Detector"]

Image = Union[str, os.PathLike, np.ndarray]


class Detector:
    """
    A ready RetinaNetPlugin: built, weights loaded, given its precision, wrapped for TTA and
    tiling as its config says.

    Attributes:
        cfg (CfgNode): the frozen config.
        predictor (RetinaPredictor or TiledPredictor): one BGR image in, {"instances": ...} out.
        class_names (list[str] or None): the names of class ids 0..K-1.
    """

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg.clone()
        self.cfg.freeze()
        register_config_datasets(self.cfg)  # the embedded datasets' class names, for the labels
        tiled = self.cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0
        self.predictor = TiledPredictor(self.cfg) if tiled else RetinaPredictor(self.cfg)
        self.class_names = dataset_metadata(self.cfg, self.model.class_names).get("thing_classes", None)
        self._raster_predictor = None

    @classmethod
    def from_config(cls, config: Union[str, os.PathLike, CfgNode], weights: Optional[str] = None, opts: Sequence = ()) -> "Detector":
        """
        Args:
            config: a YAML config file (read with `retina_plugin.load_config`, which names any bad
                key) or a CfgNode.
            weights: the checkpoint to load (default: the config's MODEL.WEIGHTS).
            opts: Detectron2's KEY VALUE options, merged last (e.g. ["MODEL.DEVICE", "cpu"]).
        """
        if isinstance(config, CfgNode):
            cfg = config.clone()
            cfg.defrost()
            merge_options(cfg, opts)
        else:
            cfg = load_config(os.fspath(config), list(opts))
        if weights is not None:
            cfg.MODEL.WEIGHTS = os.fspath(weights)
        if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        return cls(cfg)

    @property
    def model(self) -> torch.nn.Module:
        """The ready RetinaNetPlugin (eval mode)."""
        return self.predictor.model

    def predict(self, image: Image) -> Instances:
        """
        Args:
            image: an image file, or an (H, W, 3) uint8 array in BGR order (as OpenCV reads it).
        Returns:
            Instances (on the CPU) with pred_boxes (Boxes (N, 4) XYXY; a rotated model's
            RotatedBoxes (N, 5) XYWHA), in the image's pixels, scores, pred_classes.
        """
        array = read_bgr_image(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else image
        return self.predictor(array)["instances"].to("cpu")

    def predict_frame(self, image: Image):
        """
        `predict` as a pandas DataFrame, one row a detection: the box as xmin, ymin, xmax, ymax;
        or, for a model of rotated boxes (`is_rotated(cfg)`), as Detectron2's XYWHA cx, cy, w, h,
        angle (degrees, counter-clockwise as seen on the image); then score, class_id, label (a
        name, or the id).
        """
        import pandas as pd

        instances = self.predict(image)
        boxes = instances.pred_boxes.tensor.numpy()
        columns = ("cx", "cy", "w", "h", "angle") if is_rotated(self.cfg) else ("xmin", "ymin", "xmax", "ymax")
        classes = instances.pred_classes.numpy()
        names = self.class_names
        return pd.DataFrame({
            **dict(zip(columns, boxes.reshape(-1, len(columns)).T)), "score": instances.scores.numpy(), "class_id": classes,
            "label": [names[c] if names else str(c) for c in classes],
        })  # fmt: skip

    def predict_raster(self, path: Union[str, os.PathLike], output: Optional[str] = None, progress: bool = False):
        """
        Detect in a georeferenced raster window by window (MODEL.RETINA_PLUGIN.TILE_SIZE, else
        512 px windows), as tools/predict_raster.py does. Returns a GeoDataFrame of polygons in
        the raster's CRS (score, label, class_id, source); with `output` (.gpkg, .geojson,
        .shp), also written there. Needs the geo extra.
        """
        from .geo.predict import RasterPredictor, raster_detections_frame, with_raster_tile
        from .geo.vectors import write_detections

        if self._raster_predictor is None:  # built once: it loads the weights again
            self._raster_predictor = RasterPredictor(with_raster_tile(self.cfg))
        frame = raster_detections_frame(self._raster_predictor, os.fspath(path), self.class_names or [], progress)
        return write_detections([frame], output) if output else frame

    def evaluate(self, dataset: Union[str, Tuple[str, str]], output_folder: Optional[str] = None) -> dict:
        """
        COCO box AP (COCOEvaluator) on `dataset`: a registered Detectron2 dataset name, or a
        (COCO json, image folder) pair, registered here. Returns {"AP", "AP50", ..., "seconds_per_image"}.
        """
        if isinstance(dataset, (tuple, list)):
            json_file, image_root = (os.fspath(p) for p in dataset)
            name = f"api_{Path(json_file).stem}"
            register_coco_json(name, json_file, image_root)
        else:
            name = dataset
        check_dataset_files([name], rotated=is_rotated(self.cfg))
        check_tiled_evaluation(self.cfg)
        runner = inference_model(self.model, self.predictor.settings)
        folder = output_folder or os.path.join(self.cfg.OUTPUT_DIR, "inference", name)
        return evaluate(self.cfg, runner, name, folder)
