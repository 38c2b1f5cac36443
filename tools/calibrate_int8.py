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

import retina_plugin  # noqa: F401  (registers the components)
from retina_plugin.config import ConfigError, load_config
from retina_plugin.deploy.calibration import calibration_report, run_calibration
from retina_plugin.deploy.quantization import Int8Error
from retina_plugin.engine import add_dataset_arguments, add_opts_argument, one_line_errors, register_config_datasets, user_dataset_opts


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
    return add_opts_argument(parser)


def main(argv=None):
    args = get_parser().parse_args(argv)
    with one_line_errors("calibrate_int8.py", (ConfigError, Int8Error, ValueError)):
        cfg = load_config(args.config_file, user_dataset_opts(args) + list(args.opts))
        cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "float32"
        register_config_datasets(cfg)
        info = run_calibration(cfg, args.dataset, args.num_images, args.output, args.eval)
    print(calibration_report(info))


if __name__ == "__main__":
    main()
