"""
A detector run over georeferenced rasters window by window
(`TiledInference.detect_windows` fed by `RasterSource`), the detections written as map
features (vectors.py) and, optionally, as COCO results in pixel coordinates. A model of rotated
boxes (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator) writes each detection's four corners
as the polygon, and its XYWHA box (cx, cy, w, h, angle) as the COCO result's bbox, the results
format of Detectron2's RotatedCOCOEvaluator.

Memory is bounded by TILE_BATCH windows, whatever the raster's size: a window is read when its
batch runs, windows that are all nodata are skipped unread by the model, and only the kept
detections of each window stay in memory.
"""
import json
import logging
import os
import time
from types import SimpleNamespace
from typing import List, Optional, Sequence

import torch
from affine import Affine
from tqdm import tqdm

from ..config import ConfigError
from ..data.output_files import OutputSet
from ..data.raster import RasterSource, resolve_raster_inputs
from ..inference.predictor import TiledPredictor, dataset_metadata
from .vectors import detections_frame, detections_layer, vector_driver, write_layer

__all__ = ["DEFAULT_RASTER_TILE", "with_raster_tile", "RasterPredictor", "raster_detections_frame", "predict_rasters", "coco_results"]

logger = logging.getLogger("predict_raster")

# Window side when neither the config (MODEL.RETINA_PLUGIN.TILE_SIZE) nor --tile sets one.
DEFAULT_RASTER_TILE = 512


def with_raster_tile(cfg):
    """`cfg`, or a copy with TILE_SIZE DEFAULT_RASTER_TILE where it sets none: a raster is read window by window."""
    if cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0:
        return cfg
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE = DEFAULT_RASTER_TILE
    if frozen:
        cfg.freeze()
    return cfg

class RasterPredictor(TiledPredictor):
    """
    TiledPredictor (weights, int8, test-time augmentation as the config says) over rasters
    read window by window: `predict(path)` returns the detections of one raster.
    """

    def __init__(self, cfg, class_thresholds: Optional[Sequence[float]] = None):
        super().__init__(cfg)
        self.bands = list(cfg.MODEL.RETINA_PLUGIN.RASTER_BANDS) or None
        self.num_channels = len(cfg.MODEL.PIXEL_MEAN)
        self.class_thresholds = None if class_thresholds is None else torch.as_tensor(class_thresholds)

    def open(self, path: str) -> RasterSource:
        """The raster at `path`, its bands checked against the model's channels."""
        return RasterSource(path, self.bands, self.input_format, self.num_channels)

    def predict(self, path: str, progress: bool = True) -> SimpleNamespace:
        """
        Returns:
            namespace of boxes (N, 4) pixel XYXY (or (N, 5) XYWHA for a rotated model),
            scores (N,), classes (N,) (numpy), the
            raster's crs and transform, and windows (total), windows_run, windows_skipped
            (all nodata), seconds.
        """
        with self.open(path) as source, source.window_reading_env(self.tiled.tile_size):
            skipped = []

            def read(x0, y0, x1, y1):
                window = source.read(x0, y0, x1, y1)
                if window is None:
                    skipped.append((x0, y0))
                    return None
                tensor = torch.from_numpy(window)
                return tensor if tensor.dtype == torch.uint8 else tensor.float()

            total = self.tiled.num_tiles(source.height, source.width)
            bar = tqdm(total=total, unit="window", desc=os.path.basename(path), disable=not progress, mininterval=1.0)
            start = time.perf_counter()
            with bar:
                instances = self.tiled.detect_windows(read, source.height, source.width, lambda done: bar.update(done - bar.n))
            seconds = time.perf_counter() - start
            instances = instances.to("cpu")
            if self.class_thresholds is not None:
                instances = instances[instances.scores >= self.class_thresholds[instances.pred_classes]]
            return SimpleNamespace(
                path=path, boxes=instances.pred_boxes.tensor.numpy(), scores=instances.scores.numpy(),
                classes=instances.pred_classes.numpy(), crs=source.crs, transform=source.transform,
                width=source.width, height=source.height,
                windows=total, windows_skipped=len(skipped), windows_run=total - len(skipped), seconds=seconds,
            )  # fmt: skip


def detections_to_frame(d: SimpleNamespace, class_names: Sequence[str]):
    """The detections of one raster (RasterPredictor.predict) as map features, logged with their timing."""
    if d.crs is None:
        logger.warning(f"{d.path}: the raster has no CRS; detections are written in pixel coordinates")
    transform = d.transform if d.crs is not None else Affine.identity()
    megapixels = d.width * d.height / 1e6
    logger.info(
        f"{d.path}: {len(d.boxes)} detections; ran {d.windows_run} of {d.windows} windows "
        f"({d.windows_skipped} all nodata) in {d.seconds:.1f}s, {d.seconds / megapixels:.3f} s/megapixel"
    )
    return detections_frame(d.boxes, d.scores, d.classes, list(class_names), transform, d.crs, d.path)


def raster_detections_frame(predictor: "RasterPredictor", path: str, class_names: Sequence[str], progress: bool = False):
    """Detect in the raster `path` and return its detections as map features (a GeoDataFrame)."""
    return detections_to_frame(predictor.predict(path, progress), class_names)


def coco_results(detections: List[SimpleNamespace], class_ids: Optional[dict] = None) -> list:
    """
    COCO results format (as Detectron2's COCOEvaluator writes coco_instances_results.json):
    per detection image_id (1-based position of its raster), file_name, category_id (the
    dataset's id through `class_ids` {contiguous: dataset id}, else the contiguous id), bbox
    [x, y, w, h] in the raster's pixels (rotated boxes: [cx, cy, w, h, angle], as Detectron2's
    RotatedCOCOEvaluator writes them), score.
    """
    results = []
    for image_id, d in enumerate(detections, start=1):
        for box, score, cls in zip(d.boxes.tolist(), d.scores.tolist(), d.classes.tolist()):
            category = class_ids[cls] if class_ids else cls
            bbox = box if len(box) == 5 else [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append({"image_id": image_id, "file_name": d.path, "category_id": int(category), "bbox": bbox, "score": score})
    return results


def predict_rasters(cfg, inputs, output, coco_json=None, class_names=None, class_thresholds=None, progress=True):
    """
    Detect in every raster of `inputs` (files or folders) and write one vector layer to
    `output` (.gpkg, .geojson, .shp): one polygon per detection in the first raster's CRS,
    with score, label, class_id and source; with `coco_json`, also COCO results there.
    The outputs are locked while the run lasts (a second run on them is refused) and replace
    the previous ones only once all are written (retina_plugin.data.output_files).
    Returns the per-raster detection namespaces.
    """
    vector_driver(output)  # a bad output name fails before the model is built
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"--classes names {len(class_names)} class(es) {list(class_names)} but the model has {num_classes} (MODEL.RETINANET.NUM_CLASSES)")
    paths = resolve_raster_inputs(inputs)
    with OutputSet(output, coco_json) as out:
        predictor = RasterPredictor(cfg, class_thresholds)
        for path in paths:  # bad bands or an unreadable file fail before the first raster runs
            predictor.open(path).close()
        own = predictor.model.class_names
        if class_names is not None and own and list(class_names) != list(own):
            logger.warning(f"--classes {list(class_names)} relabel the classes the checkpoint names {list(own)}")
        metadata = dataset_metadata(cfg, class_names or own)
        names = list(metadata.get("thing_classes", None) or [])
        detections, frames = [], []
        for path in paths:
            d = predictor.predict(path, progress)
            detections.append(d)
            frames.append(detections_to_frame(d, names))
        write_outputs(out, output, coco_json, detections, frames, metadata)
    return detections


def write_outputs(out: OutputSet, output: str, coco_json, detections, frames, metadata) -> None:
    """The vector layer and the COCO results of all rasters, written to `out`'s temporaries and committed together."""
    frame = detections_layer(frames)
    write_layer(frame, out.temp(output), output)
    out.pause("vector-written")
    if coco_json:
        reverse = metadata.get("thing_dataset_id_to_contiguous_id", None)
        class_ids = {v: k for k, v in reverse.items()} if reverse else None
        with open(out.temp(coco_json), "w") as f:
            json.dump(coco_results(detections, class_ids), f)
    out.commit()
    logger.info(f"wrote {len(frame)} detections to {output} (CRS {frame.crs.to_string() if frame.crs else 'none: pixel coordinates'})")
    if coco_json:
        logger.info(f"wrote {sum(len(d.boxes) for d in detections)} detections in COCO results format to {coco_json}")
