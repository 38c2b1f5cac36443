"""
The logic of tools/analyze_anchors.py: its command line, the dataset it analyses, and the files
it writes. Every error the user can fix ends with one line `analyze_anchors: error: ...` and
exit status 2.
"""
import argparse
import json
import os

from detectron2.data import DatasetCatalog

from ..analysis.anchors.coverage_plot import plot_anchor_coverage
from ..analysis.anchors.coverage_report import analyze_anchor_coverage, format_anchor_coverage_report
from ..analysis.anchors.resized_boxes import AnchorCoverageError
from ..config import load_config
from ..data.catalog import register_config_datasets
from .arguments import ToolParser, add_dataset_arguments, one_line_errors, user_dataset_opts

__all__ = ["get_parser", "dataset_to_analyse", "main"]

PROG = "analyze_anchors"


def get_parser() -> argparse.ArgumentParser:
    """The tool's command-line arguments."""
    parser = ToolParser(
        prog=PROG,
        description="Anchor coverage of a dataset's boxes under a RetinaNetPlugin config",
        epilog="--train-json/--train-images (or --test-json/--test-images): a COCO-format dataset to analyse "
        "instead of --dataset, whatever --split; given both, the one of --split",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="a registered Detectron2 dataset (default: the config's first DATASETS.TRAIN, or TEST with --split test)",
    )
    add_dataset_arguments(parser)
    parser.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="resize as in training (the largest INPUT.MIN_SIZE_TRAIN) or as in testing (INPUT.MIN_SIZE_TEST)",
    )
    parser.add_argument("--max-images", type=int, metavar="N", help="analyse only the first N images")
    parser.add_argument(
        "--output", metavar="DIR", help="where the PNG and the JSON go (default: the config's OUTPUT_DIR)"
    )
    return parser


def dataset_to_analyse(args, cfg) -> str:
    """
    The name of the dataset to analyse: a json of --train-json or --test-json (registered by
    `user_dataset_opts`, which pointed DATASETS.TRAIN / TEST of `cfg` at it; with both, the one
    of --split); else --dataset; else the config's first DATASETS.TRAIN (--split train) or
    DATASETS.TEST (--split test), its embedded datasets registered here.
    """
    other = "test" if args.split == "train" else "train"
    given = [split for split in (args.split, other) if getattr(args, f"{split}_json") is not None]
    if given:
        return (cfg.DATASETS.TRAIN if given[0] == "train" else cfg.DATASETS.TEST)[0]
    name = args.dataset
    if name is None:
        names = cfg.DATASETS.TRAIN if args.split == "train" else cfg.DATASETS.TEST
        if not names:
            raise AnchorCoverageError("no dataset: pass --dataset NAME, or --train-json FILE --train-images DIR")
        name = names[0]
    if name not in DatasetCatalog.list():
        register_config_datasets(cfg)
    return name


def main(argv=None):
    """Analyse, print the report, write anchor_coverage.png and anchor_coverage.json."""
    args = get_parser().parse_args(argv)
    # ValueError: AnchorCoverageError, ConfigError, a malformed json (register_coco_json).
    with one_line_errors(PROG):
        cfg = load_config(args.config_file, user_dataset_opts(args) + list(args.opts))
        name = dataset_to_analyse(args, cfg)
        report = analyze_anchor_coverage(cfg, name, args.split, args.max_images)
    print(format_anchor_coverage_report(report))
    output = args.output or cfg.OUTPUT_DIR
    with one_line_errors(PROG):
        os.makedirs(output, exist_ok=True)
        png_path = plot_anchor_coverage(report, os.path.join(output, "anchor_coverage.png"))
        json_path = os.path.join(output, "anchor_coverage.json")
        with open(json_path, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    print(f"\nWrote {png_path} and {json_path}")
