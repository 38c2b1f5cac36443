"""
Calibrating int8 inference for trained weights (tools/calibrate_int8.py): the float32 model on
calibration images records every activation range the int8 model quantizes; optionally both
precisions are evaluated on the config's DATASETS.TEST.
"""
import copy
import os

from detectron2.data import DatasetCatalog, build_detection_test_loader

from ..data.loader import load_dataset_dicts
from ..data.mapper import RetinaDatasetMapper
from .evaluation import evaluate
from .int8 import Int8Error, calibrate_int8, quantize_int8, save_int8_calibration, weights_fingerprint
from .model import InferenceSettings, inference_model, load_model


def calibration_dataset(cfg, dataset=None) -> str:
    """The calibration dataset's name: `dataset`, else the config's first DATASETS.TRAIN."""
    name = dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if name is None:
        raise Int8Error("no calibration images: pass --dataset NAME, or --train-json FILE --train-images DIR")
    if name not in DatasetCatalog.list():
        raise Int8Error(f"dataset {name!r} is not registered")
    return name


def calibration_loader(cfg, name: str, num_images: int):
    """`num_images` of dataset `name`, evenly spaced, mapped as at test time (resized, no flip)."""
    if num_images < 1:
        raise Int8Error(f"--num-images {num_images}: must be >= 1")
    dicts = load_dataset_dicts([name])
    step = max(1, len(dicts) // num_images)
    chosen = dicts[::step][:num_images]
    mapper = RetinaDatasetMapper(cfg, is_train=False, dataset_name=name)
    return build_detection_test_loader(chosen, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS), len(chosen)


def run_calibration(cfg, dataset=None, num_images=32, output=None, evaluate_both=False) -> dict:
    """
    Calibrate the float32 model of `cfg` (MODEL.WEIGHTS) on `num_images` of `dataset` and write the
    ranges to `output` (default OUTPUT_DIR/int8_calibration.json); with `evaluate_both`, the COCO AP
    and seconds per image of float32 and int8 on each of DATASETS.TEST. Returns what was written.
    """
    if evaluate_both and not cfg.DATASETS.TEST:
        raise Int8Error("--eval needs DATASETS.TEST in the config (or --test-json/--test-images)")
    name = calibration_dataset(cfg, dataset)
    loader, count = calibration_loader(cfg, name, num_images)
    float_cfg = cfg.clone()
    float_cfg.defrost()
    float_cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "float32"
    model = load_model(float_cfg)
    ranges = calibrate_int8(model, loader)
    output = output or os.path.join(cfg.OUTPUT_DIR, "int8_calibration.json")
    info = {"weights": cfg.MODEL.WEIGHTS, "weights_fingerprint": weights_fingerprint(model), "dataset": name, "images": count}
    if evaluate_both:
        int8_model = quantize_int8(copy.deepcopy(model), ranges, source="this calibration")
        settings = InferenceSettings.from_config(cfg)
        folder = os.path.join(cfg.OUTPUT_DIR, "int8_eval")
        info["evaluation"] = {
            test_name: {
                precision: evaluate(cfg, inference_model(m, settings, tta=False), test_name, os.path.join(folder, test_name))
                for precision, m in (("float32", model), ("int8", int8_model))
            }
            for test_name in cfg.DATASETS.TEST
        }
    save_int8_calibration(output, ranges, **info)
    return {**info, "output": output, "num_ranges": len(ranges)}
