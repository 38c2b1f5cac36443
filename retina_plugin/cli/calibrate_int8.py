"""
tools/calibrate_int8.py: Calibrate int8 inference for trained RetinaNetPlugin weights: run the float32 model on
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
from ..config import load_config
from ..data.catalog import register_config_datasets
from ..inference.calibration import run_calibration
from ..inference.evaluation import AP_KEYS
from .arguments import ToolParser, add_dataset_arguments, one_line_errors, user_dataset_opts

PROG = "calibrate_int8"


def get_parser():
    """The tool's command-line arguments."""
    parser = ToolParser(prog=PROG, description="Calibrate int8 inference of a trained RetinaNetPlugin")
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
    return parser


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


def main(argv=None):
    args = get_parser().parse_args(argv)
    with one_line_errors(PROG):
        cfg = load_config(args.config_file, user_dataset_opts(args) + list(args.opts))
        cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE = "float32"
        register_config_datasets(cfg)
        info = run_calibration(cfg, args.dataset, args.num_images, args.output, args.eval)
    print(calibration_report(info))
