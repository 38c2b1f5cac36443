#!/usr/bin/env python
"""
Calibrate int8 inference for trained RetinaNetPlugin weights: run the float32 model on
calibration images, record the range of every activation the int8 model quantizes, and write
them to a JSON file. With --eval, evaluate the float32 and the int8 model on the config's
DATASETS.TEST and report the AP each gets, their difference and the time per image.

    python tools/calibrate_int8.py --config-file configs/shapes_R18_cpu.yaml --eval \
        --opts MODEL.WEIGHTS output/shapes_R18_cpu/model_final.pth
    python tools/calibrate_int8.py --config-file my.yaml --train-json ann/train.json --train-images images/train \
        --test-json ann/val.json --test-images images/val --num-images 64 --eval \
        --output output/int8_calibration.json --opts MODEL.WEIGHTS output/model_final.pth

Then run the int8 model with the options it prints, e.g. in the demo or train_net --eval-only:
    MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8 MODEL.RETINA_PLUGIN.INT8_CALIBRATION <output>
"""
import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.data import DatasetCatalog, build_detection_test_loader  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402

from retina_plugin.checkpoint import RetinaCheckpointer  # noqa: E402
from retina_plugin.config import ConfigError, load_config  # noqa: E402
import retina_plugin  # noqa: E402,F401  (registers the components)
from retina_plugin.data.loader import load_dataset_dicts  # noqa: E402
from retina_plugin.data.mapper import RetinaDatasetMapper  # noqa: E402
from retina_plugin.engine import Trainer, add_dataset_arguments, register_config_datasets, user_dataset_opts  # noqa: E402
from retina_plugin.quantization import (  # noqa: E402
    Int8Error,
    calibrate_int8,
    quantize_int8,
    save_int8_calibration,
    weights_fingerprint,
)

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def get_parser():
    """The tool's command-line arguments."""
    parser = argparse.ArgumentParser(description="Calibrate int8 inference of a trained RetinaNetPlugin")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--dataset", metavar="NAME", help="a registered dataset to calibrate on (default: the config's first DATASETS.TRAIN)"
    )
    add_dataset_arguments(parser)  # --train-json: calibrate on it; --test-json: evaluate on it
    parser.add_argument(
        "--num-images", type=int, default=32, metavar="N", help="calibration images, spread evenly over the dataset (default 32)"
    )
    parser.add_argument(
        "--output", metavar="FILE", help="the JSON file to write (default: OUTPUT_DIR/int8_calibration.json)"
    )
    parser.add_argument(
        "--eval", action="store_true", help="evaluate float32 and int8 on DATASETS.TEST and report both APs"
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config options as KEY VALUE pairs, merged last")
    return parser


def calibration_dataset(args, cfg) -> str:
    """The calibration dataset's name: --dataset, else the config's first DATASETS.TRAIN."""
    name = args.dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
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


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        cfg = load_config(args.config_file, user_dataset_opts(args) + list(args.opts))
        cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "float32"
        register_config_datasets(cfg)
        if args.eval and not cfg.DATASETS.TEST:
            raise Int8Error("--eval needs DATASETS.TEST in the config (or --test-json/--test-images)")
        name = calibration_dataset(args, cfg)
        loader, count = calibration_loader(cfg, name, args.num_images)
        model = Trainer.build_model(cfg).eval()
        RetinaCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        ranges = calibrate_int8(model, loader)
        output = args.output or os.path.join(cfg.OUTPUT_DIR, "int8_calibration.json")
        info = {"weights": cfg.MODEL.WEIGHTS, "weights_fingerprint": weights_fingerprint(model), "dataset": name, "images": count}
        if args.eval:
            int8_model = quantize_int8(copy.deepcopy(model), ranges, source="this calibration")
            info["evaluation"] = {}
            for test_name in cfg.DATASETS.TEST:
                info["evaluation"][test_name] = {
                    "float32": evaluate(cfg, model, test_name),
                    "int8": evaluate(cfg, int8_model, test_name),
                }
        save_int8_calibration(output, ranges, **info)
    except (ConfigError, Int8Error, ValueError) as e:
        sys.exit(f"calibrate_int8.py: error: {e}")

    print(f"\n{len(ranges)} activation ranges from {count} images of {name} -> {output}")
    for test_name, result in info.get("evaluation", {}).items():
        print(f"\n{test_name}:")
        print(f"  {'':8}" + "".join(f"{k:>8}" for k in AP_KEYS if k in result["float32"]) + "   s/image")
        for precision in ("float32", "int8"):
            r = result[precision]
            print(f"  {precision:8}" + "".join(f"{r[k]:8.2f}" for k in AP_KEYS if k in r) + f"{r['seconds_per_image']:10.3f}")
        print(f"  int8 - float32: AP {result['int8']['AP'] - result['float32']['AP']:+.2f}")
    print(f"\nRun it in int8 with:\n  MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8 MODEL.RETINA_PLUGIN.INT8_CALIBRATION {output}")


if __name__ == "__main__":
    main()
