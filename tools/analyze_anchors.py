#!/usr/bin/env python
"""
Do a config's anchors cover a dataset's boxes? Match every ground-truth box to the model's
anchors (MODEL.ANCHOR_GENERATOR) as training does (after the config's resizing, with the Matcher
of MODEL.RETINANET.IOU_THRESHOLDS / IOU_LABELS), report the coverage, the positive anchors per
box and their levels, and suggest MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS that cover more
boxes, ready to paste into any Detectron2 RetinaNet config.

    python tools/analyze_anchors.py --config-file configs/shapes_R18_cpu.yaml --dataset shapes_train \
        --output output/anchors
    python tools/analyze_anchors.py --config-file configs/retinanet_R50.yaml \
        --json ann/train.json --image-root images/train [--split test] [--max-images 2000]
    ... --opts INPUT.MIN_SIZE_TRAIN "(1024,)" MODEL.RETINANET.IOU_THRESHOLDS "[0.4, 0.6]"

Prints the report and the lines to paste into a config, and writes anchor_coverage.png and
anchor_coverage.json (every number) into --output (default: the config's OUTPUT_DIR).
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.data import DatasetCatalog  # noqa: E402

from retina_plugin.config import ConfigError, load_config  # noqa: E402
import retina_plugin  # noqa: E402,F401  (registers the components)
from retina_plugin.analysis import (  # noqa: E402
    AnchorCoverageError,
    analyze_anchor_coverage,
    format_anchor_coverage_report,
    plot_anchor_coverage,
)
from retina_plugin.data import register_coco_json  # noqa: E402
from retina_plugin.engine import register_config_datasets  # noqa: E402


def get_parser():
    """The tool's command-line arguments."""
    parser = argparse.ArgumentParser(description="Anchor coverage of a dataset's boxes under a RetinaNetPlugin config")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="a registered Detectron2 dataset (default: the config's first DATASETS.TRAIN, or TEST with --split test)",
    )
    parser.add_argument("--json", metavar="FILE", help="a COCO-format annotation file to analyse instead of --dataset")
    parser.add_argument("--image-root", metavar="DIR", help="the image folder of --json")
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
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help='config options as KEY VALUE pairs, merged last, e.g. MODEL.RETINANET.IOU_THRESHOLDS "[0.4, 0.6]"',
    )
    return parser


def setup_cfg(args):
    """The config: defaults, then --config-file, then --opts."""
    try:
        return load_config(args.config_file, args.opts)
    except ConfigError as e:
        raise AnchorCoverageError(str(e)) from None


def dataset_to_analyse(args, cfg) -> str:
    """Register --json (or the config's embedded datasets) and return the dataset's name."""
    if args.json is not None or args.image_root is not None:
        if args.json is None or args.image_root is None:
            raise AnchorCoverageError(f"--json and --image-root go together (got {args.json!r}, {args.image_root!r})")
        name = f"anchors_{Path(args.json).stem}"
        register_coco_json(name, args.json, args.image_root)
        return name
    name = args.dataset
    if name is None:
        names = cfg.DATASETS.TRAIN if args.split == "train" else cfg.DATASETS.TEST
        if not names:
            raise AnchorCoverageError("no dataset: pass --dataset NAME, or --json FILE --image-root DIR")
        name = names[0]
    if name not in DatasetCatalog.list():
        register_config_datasets(cfg)
    return name


def main(argv=None):
    """Analyse, print the report, write the PNG and the JSON."""
    args = get_parser().parse_args(argv)
    try:
        cfg = setup_cfg(args)
        name = dataset_to_analyse(args, cfg)
        report = analyze_anchor_coverage(cfg, name, args.split, args.max_images)
    except (AnchorCoverageError, ValueError) as e:  # ValueError: a malformed --json, a config value
        sys.exit(f"analyze_anchors.py: error: {e}")
    print(format_anchor_coverage_report(report))
    output = args.output or cfg.OUTPUT_DIR
    os.makedirs(output, exist_ok=True)
    png_path = plot_anchor_coverage(report, os.path.join(output, "anchor_coverage.png"))
    json_path = os.path.join(output, "anchor_coverage.json")
    with open(json_path, "w") as f:
        json.dump(report.to_dict(), f, indent=2)
    print(f"\nWrote {png_path} and {json_path}")


if __name__ == "__main__":
    main()
