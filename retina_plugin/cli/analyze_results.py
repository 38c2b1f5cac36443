"""
The logic of tools/analyze_results.py: its command line, the results file it analyses (given,
or made by running the model on the dataset) and the files it writes. Every error the user can
fix ends with one line `analyze_results: error: ...` and exit status 2.
"""
import argparse
import os
from types import SimpleNamespace

from detectron2.data import DatasetCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.evaluation import inference_on_dataset

from ..analysis.detections.detection_data import ground_truth_from_coco, load_detections
from ..analysis.detections.error_plots import plot_confusion_matrix, plot_errors, plot_pr_curves
from ..analysis.detections.error_report import analyse_results, format_table, write_tables
from ..analysis.detections.worst_images import write_worst_images
from ..config import ConfigError, load_config
from ..data.catalog import check_dataset_files, register_config_datasets
from ..inference.evaluation import build_evaluator, build_test_loader
from ..inference.model import InferenceSettings, inference_model, load_model
from ..errors import InputFileError
from ..inference.tiling_checks import check_tiled_evaluation
from ..modeling.box_transform import is_rotated
from .arguments import ToolParser, check_device, one_line_errors, user_dataset_opts

__all__ = ["get_parser", "dataset_to_analyse", "run_model", "main"]

PROG = "analyze_results"


def get_parser() -> argparse.ArgumentParser:
    """The tool's command-line arguments."""
    parser = ToolParser(prog=PROG, description="Per-class AP, thresholds, confusion matrix and TIDE errors of a detector")
    parser.add_argument("--config-file", metavar="FILE", help="config of the model (and of the default dataset)")
    add = parser.add_argument
    add("--dataset", metavar="NAME", help="a registered dataset (default: the config's first DATASETS.TEST)")
    add("--test-json", metavar="FILE", help="a COCO-format annotation file to analyse instead of --dataset")
    add("--test-images", metavar="DIR", help="image folder of --test-json")
    add("--predictions", metavar="FILE", help="COCO results json (default: run MODEL.WEIGHTS on the dataset)")
    add("--output", metavar="DIR", help="where the files go (default: OUTPUT_DIR/error_analysis)")
    add("--iou", type=float, default=0.5, help="IoU of a match: thresholds, confusion matrix, errors (0.5)")
    add("--num-worst", type=int, default=10, metavar="N", help="draw the N images with most errors (10)")
    return parser


def dataset_to_analyse(args, cfg) -> str:
    """
    --test-json (registered, named by `user_dataset_opts`), else --dataset, else the config's
    first DATASETS.TEST; its files checked, and for a rotated config its boxes (`check_dataset_files`).
    """
    if args.test_json is not None or args.test_images is not None:
        name = cfg.DATASETS.TEST[0]
    else:
        name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
        if name is None:
            raise ConfigError("no dataset: pass --dataset NAME, or --test-json FILE --test-images DIR")
        if name not in DatasetCatalog.list():
            cfg = cfg.clone()
            cfg.defrost()
            cfg.DATASETS.TEST = (name,)
            register_config_datasets(cfg)
    check_dataset_files([name], rotated=is_rotated(cfg))
    return name


def run_model(cfg, name: str, output: str) -> str:
    """
    Run cfg.MODEL.WEIGHTS on dataset `name`, made ready as on every path (weights, precision,
    test-time augmentation, tiling: retina_plugin.inference.model), with a COCOEvaluator writing
    into `output`; the path of its coco_instances_results.json.
    """
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("no --predictions and MODEL.WEIGHTS is empty: pass one (--opts MODEL.WEIGHTS FILE)")
    if "://" not in cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise ConfigError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} not found")
    check_device(cfg.MODEL.DEVICE)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (name,)
    check_tiled_evaluation(cfg)
    runner = inference_model(load_model(cfg), InferenceSettings.from_config(cfg))
    inference_on_dataset(runner, build_test_loader(cfg, name), build_evaluator(cfg, name, output))
    path = os.path.join(output, "coco_instances_results.json")
    if not os.path.exists(path):  # COCOEvaluator writes nothing when the model detected nothing
        with open(path, "w") as f:
            f.write("[]")
    return path


def main(argv=None):
    """Analyse, print the table, write the tables, thresholds, figures and worst images into --output."""
    args = get_parser().parse_args(argv)
    with one_line_errors(PROG):
        if args.num_worst < 0 or not 0.0 < args.iou < 1.0:
            raise ConfigError("--iou must be in (0, 1) and --num-worst >= 0")
        flags = SimpleNamespace(train_json=None, train_images=None, test_json=args.test_json,
                                test_images=args.test_images)  # fmt: skip
        cfg = load_config(args.config_file, user_dataset_opts(flags) + list(args.opts))
        name = dataset_to_analyse(args, cfg)
        output = args.output or os.path.join(cfg.OUTPUT_DIR, "error_analysis")
        os.makedirs(output, exist_ok=True)
        gt = ground_truth_from_coco(convert_to_coco_dict(name))
        if not gt.category_ids:
            raise InputFileError(f"dataset {name!r} has no categories")
        predictions = args.predictions or run_model(cfg, name, output)
        analysis = analyse_results(gt, load_detections(predictions, gt), args.iou)
    print(f"{predictions} on {name} ({len(gt.image_ids)} images, {len(analysis.dets)} detections)\n")
    print(format_table(analysis))
    with one_line_errors(PROG):
        written = write_tables(analysis, output)
        written.append(plot_pr_curves(analysis, os.path.join(output, "pr_curves.png")))
        written.append(plot_confusion_matrix(analysis, os.path.join(output, "confusion_matrix.png")))
        written.append(plot_errors(analysis, os.path.join(output, "errors.png")))
        worst = write_worst_images(analysis, os.path.join(output, "worst"), args.num_worst)
    print(f"\nWrote {', '.join(os.path.basename(p) for p in written)} and {len(worst)} images in worst/ into {output}")
