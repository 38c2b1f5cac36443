"""
Calibrating int8 inference for trained weights (tools/calibrate_int8.py): the float32 model on
calibration images records every activation range the int8 model quantizes; optionally both
precisions are evaluated on the config's DATASETS.TEST.
"""
import copy
import os
import time

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset

from ..data.loader import load_dataset_dicts
from ..data.mapper import RetinaDatasetMapper
from ..engine.checkpoint import RetinaCheckpointer
from ..engine.trainer import Trainer
from .quantization import Int8Error, calibrate_int8, quantize_int8, save_int8_calibration, weights_fingerprint

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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


def evaluate(cfg, model, dataset_name: str) -> dict:
    """COCO box AP of `model` on `dataset_name`, and the seconds per image."""
    loader = Trainer.build_test_loader(cfg, dataset_name)
    evaluator = Trainer.build_evaluator(cfg, dataset_name, output_folder=os.path.join(cfg.OUTPUT_DIR, "int8_eval"))
    start = time.perf_counter()
    results = inference_on_dataset(model, loader, evaluator)
    seconds = (time.perf_counter() - start) / len(loader)
    return {**{k: results["bbox"][k] for k in AP_KEYS if k in results["bbox"]}, "seconds_per_image": seconds}


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
    model = Trainer.build_model(cfg).eval()
    RetinaCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    ranges = calibrate_int8(model, loader)
    output = output or os.path.join(cfg.OUTPUT_DIR, "int8_calibration.json")
    info = {"weights": cfg.MODEL.WEIGHTS, "weights_fingerprint": weights_fingerprint(model), "dataset": name, "images": count}
    if evaluate_both:
        int8_model = quantize_int8(copy.deepcopy(model), ranges, source="this calibration")
        info["evaluation"] = {
            test_name: {"float32": evaluate(cfg, model, test_name), "int8": evaluate(cfg, int8_model, test_name)}
            for test_name in cfg.DATASETS.TEST
        }
    save_int8_calibration(output, ranges, **info)
    return {**info, "output": output, "num_ranges": len(ranges)}


def calibration_report(info: dict) -> str:
    """The lines the tool prints: what was written, both precisions' AP per test set, the options to use."""
    lines = [f"\n{info['num_ranges']} activation ranges from {info['images']} images of {info['dataset']} -> {info['output']}"]
    for test_name, result in info.get("evaluation", {}).items():
        lines.append(f"\n{test_name}:")
        lines.append(f"  {'':8}" + "".join(f"{k:>8}" for k in AP_KEYS if k in result["float32"]) + "   s/image")
        for precision in ("float32", "int8"):
            r = result[precision]
            lines.append(f"  {precision:8}" + "".join(f"{r[k]:8.2f}" for k in AP_KEYS if k in r) + f"{r['seconds_per_image']:10.3f}")
        lines.append(f"  int8 - float32: AP {result['int8']['AP'] - result['float32']['AP']:+.2f}")
    lines.append(f"\nRun it in int8 with:\n  MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8 MODEL.RETINA_PLUGIN.INT8_CALIBRATION {info['output']}")
    return "\n".join(lines)
