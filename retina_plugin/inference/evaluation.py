"""
COCO evaluation of a ready model on a registered dataset, as the trainer, calibration, the
LazyConfig evaluation and the Python API run it: Detectron2's test loader (the plugin's mapper,
which names unreadable files) and `COCOEvaluator` (as `FastCOCOEvaluator`: its COCOeval is
faster-coco-eval's when installed), through `inference_on_dataset`. A rotated model
(`is_rotated(cfg)`), or any model on a dataset of rotated boxes, is scored by Detectron2's
`RotatedCOCOEvaluator` and DOTA's mAP50 (`DOTAEvaluator`) together, as Detectron2's
`DatasetEvaluators`, with rotated IoU.
"""
import os
import time

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset

from ..data.loader import load_dataset_dicts
from ..data.mapper import RetinaDatasetMapper
from ..evaluation import DOTAEvaluator, FastCOCOEvaluator, RotatedCOCOEvaluator, has_rotated_boxes
from ..modeling.box_transform import is_rotated

__all__ = ["AP_KEYS", "UNCAPPED_TILED_DETECTIONS", "build_test_loader", "build_evaluator", "evaluation_max_detections", "evaluate"]

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# COCOeval needs a number: with tiling and no cap of the whole image, one no image reaches.
UNCAPPED_TILED_DETECTIONS = 10**6


def build_test_loader(cfg, dataset_name: str):
    """Detectron2's test loader over `dataset_name`, mapped by RetinaDatasetMapper (test-time resize)."""
    resize = ((cfg.INPUT.MIN_SIZE_TEST,), cfg.INPUT.MAX_SIZE_TEST) if cfg.INPUT.MIN_SIZE_TEST > 0 else None
    return build_detection_test_loader(
        load_dataset_dicts([dataset_name], resize=resize),
        mapper=RetinaDatasetMapper(cfg, is_train=False, dataset_name=dataset_name),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def evaluation_max_detections(cfg):
    """
    COCOEvaluator's max_dets_per_image: COCO's 100 (None), or with tiled evaluation the whole
    image's cap (MODEL.RETINA_PLUGIN.TILED_DETECTIONS_PER_IMAGE), so a large image's
    detections are not cut to 100 before they are scored.
    """
    node = cfg.MODEL.RETINA_PLUGIN
    if node.TILE_SIZE == 0:
        return None
    return node.TILED_DETECTIONS_PER_IMAGE or UNCAPPED_TILED_DETECTIONS


def build_evaluator(cfg, dataset_name: str, output_folder: str = None):
    """
    COCOEvaluator of `dataset_name` writing to `output_folder` (default OUTPUT_DIR/inference/<dataset>);
    for a rotated model, or a dataset of rotated boxes (a horizontal model's boxes are then taken
    at angle 0: COCOeval cannot read 5-number boxes), RotatedCOCOEvaluator ("bbox") and
    DOTAEvaluator ("dota") in DatasetEvaluators.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    # The tiles of a raster dataset change with TILE_SIZE and the vectors: its COCO json,
    # converted from the tiles, must not be the one cached by an earlier run.
    generated = MetadataCatalog.get(dataset_name).get("raster", None) is not None
    kwargs = dict(output_dir=output_folder, max_dets_per_image=evaluation_max_detections(cfg),
                  allow_cached_coco=not generated)  # fmt: skip
    if is_rotated(cfg) or has_rotated_boxes(dataset_name):
        return DatasetEvaluators([RotatedCOCOEvaluator(dataset_name, **kwargs), DOTAEvaluator(dataset_name)])
    return FastCOCOEvaluator(dataset_name, **kwargs)


def evaluate(cfg, model, dataset_name: str, output_folder: str = None) -> dict:
    """COCO box AP of `model` (a ready model or its wrapper) on `dataset_name`, and the seconds per image."""
    loader = build_test_loader(cfg, dataset_name)
    evaluator = build_evaluator(cfg, dataset_name, output_folder)
    start = time.perf_counter()
    results = inference_on_dataset(model, loader, evaluator)
    seconds = (time.perf_counter() - start) / max(len(loader), 1)
    return {**{k: results["bbox"][k] for k in AP_KEYS if k in results["bbox"]}, "seconds_per_image": seconds}
