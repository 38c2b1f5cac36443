"""
The logic of tools/analyze_anchors.py: its command line, the dataset it analyses (a registered
one, a COCO json, or the tiles of a raster and its vectors), the settings it proposes from the
data (`--propose-settings`, `--write-config`), and the files it writes. Every error the user
can fix ends with one line `analyze_anchors: error: ...` and exit status 2.
"""
import argparse
import json
import os

from detectron2.data import DatasetCatalog

from ..analysis.anchors.coverage_plot import plot_anchor_coverage
from ..analysis.anchors.coverage_report import analyze_anchor_coverage, format_anchor_coverage_report
from ..analysis.anchors.anchor_settings import AnchorGrid, AnchorSetting
from ..analysis.anchors.anchor_coverage import matcher_iou_thresholds
from ..analysis.anchors.data_settings import is_raster, load_box_sizes, propose_input_sizes, propose_tiles
from ..analysis.anchors.resized_boxes import AnchorCoverageError
from ..config import load_config
from ..config.derived import write_derived_config
from ..data.catalog import register_config_datasets
from .arguments import ToolParser, add_dataset_arguments, add_raster_dataset_arguments, one_line_errors, user_dataset_opts

__all__ = ["get_parser", "dataset_to_analyse", "main"]

PROG = "analyze_anchors"


def get_parser() -> argparse.ArgumentParser:
    """The tool's command-line arguments."""
    parser = ToolParser(
        prog=PROG,
        description="Anchor coverage of a dataset's boxes under a RetinaNetPlugin config",
        epilog="--train-json/--train-images or --train-raster/--train-vectors (or their --test- pair): a dataset "
        "to analyse instead of --dataset, whatever --split; given both splits, the one of --split. A raster is "
        "cut into tiles as train_net.py cuts it.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="a registered Detectron2 dataset (default: the config's first DATASETS.TRAIN, or TEST with --split test)",
    )
    add_raster_dataset_arguments(add_dataset_arguments(parser))
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
    settings = parser.add_argument_group("settings from the data (docs/aerial.md)")
    settings.add_argument(
        "--propose-settings", action="store_true",
        help="propose the tiles (MODEL.RETINA_PLUGIN.TILE_SIZE, TILE_OVERLAP) for a raster or a tiled config, else "
        "the INPUT sizes, and the anchors under them, from the boxes' sizes in pixels; the coverage report is then "
        "that of the proposed settings",
    )  # fmt: skip
    settings.add_argument(
        "--write-config", metavar="FILE",
        help="also write FILE: --config-file as its _BASE_, the KEY VALUE options given, and the proposed keys "
        "(implies --propose-settings). An existing FILE is kept unless --force; the dataset flags are not written "
        "(give them to train_net.py again)",
    )  # fmt: skip
    settings.add_argument("--force", action="store_true", help="let --write-config replace an existing FILE")
    settings.add_argument(
        "--percentile", type=float, default=99.0, metavar="P",
        help="the largest box is the P-th percentile of the boxes' sizes, the smallest the (100-P)-th (default 99)",
    )  # fmt: skip
    settings.add_argument(
        "--max-cut", type=float, default=0.0, metavar="S",
        help="the share of the largest box's side a tile edge may cut off in every tile (default 0: seen whole)",
    )  # fmt: skip
    settings.add_argument(
        "--context", type=float, default=4.0, metavar="N",
        help="a tile's side is at least N times the largest box (default 4)",
    )  # fmt: skip
    return parser


def dataset_to_analyse(args, cfg) -> str:
    """
    The name of the dataset to analyse: the json or raster of --train-json / --train-raster or
    --test-json / --test-raster (registered by `user_dataset_opts`, which pointed DATASETS.TRAIN /
    TEST of `cfg` at it; with both splits, the one of --split); else --dataset; else the config's first DATASETS.TRAIN (--split train) or
    DATASETS.TEST (--split test), its embedded datasets registered here.
    """
    other = "test" if args.split == "train" else "train"
    given = [
        split for split in (args.split, other)
        if getattr(args, f"{split}_json") is not None or getattr(args, f"{split}_raster", None) is not None
    ]  # fmt: skip
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


# A raster's boxes are measured on tiles of this size and overlap (a box up to 512 px lies whole
# in one), not on the config's tiles, which clip the boxes they cut; trained at that size, so
# train_net's check of INPUT against the tiles stays quiet.
SURVEY_OPTS = [
    "MODEL.RETINA_PLUGIN.TILE_SIZE", "2048", "MODEL.RETINA_PLUGIN.TILE_OVERLAP", "0.25",
    "INPUT.MIN_SIZE_TRAIN", "(2048,)", "INPUT.MAX_SIZE_TRAIN", "2048",
]  # fmt: skip


def _with_opts(args, opts) -> argparse.Namespace:
    return argparse.Namespace(**dict(vars(args), opts=list(opts)))


def propose_settings(args):
    """
    The settings proposed from the boxes of the dataset of `args` (tiles for a raster or a tiled
    config, else INPUT sizes), and the config and dataset to search the anchors on: the config
    with the proposal on top, a raster cut into the proposed tiles.
    """
    raster = any(getattr(args, f"{split}_raster", None) is not None for split in ("train", "test"))
    dataset_opts = user_dataset_opts(_with_opts(args, list(args.opts) + (SURVEY_OPTS if raster else [])))
    cfg = load_config(args.config_file, dataset_opts + list(args.opts))
    name = dataset_to_analyse(args, cfg)
    tiles_are_images = is_raster(name)
    tiled = tiles_are_images or cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0
    sizes = load_box_sizes(cfg, name, tiled, args.max_images)
    if tiled:
        divisibility = AnchorGrid.from_config(cfg).size_divisibility
        proposal = propose_tiles(sizes, divisibility, args.percentile, args.max_cut, args.context, tiles_are_images)
    else:
        proposal = propose_input_sizes(sizes, cfg, matcher_iou_thresholds(cfg)[0], args.percentile)
    proposed = _with_opts(args, list(args.opts) + proposal.config_opts())
    proposed_cfg = load_config(args.config_file, (user_dataset_opts(proposed) if raster else dataset_opts) + proposed.opts)
    return proposal, proposed_cfg, dataset_to_analyse(proposed, proposed_cfg)


def write_config(args, cfg, proposal) -> str:
    """--write-config: the KEY VALUE options given and the proposal, on --config-file as _BASE_."""
    values, comments = {}, {}
    for key in list(args.opts)[::2]:
        node = cfg
        for part in key.split("."):
            node = node[part]
        values[key], comments[key] = node, "given on the command line"
    values.update(proposal.values)
    comments.update(proposal.reasons)
    header = [
        f"Written by tools/analyze_anchors.py --write-config from the {proposal.statistics[0]}.",
        "Train with the same dataset flags, e.g. tools/train_net.py --config-file THIS --train-raster R --train-vectors V",
    ]
    return write_derived_config(args.write_config, args.config_file, values, comments, header, overwrite=args.force)


def main(argv=None):
    """Analyse, print the report, write anchor_coverage.png and anchor_coverage.json (and --write-config)."""
    args = get_parser().parse_args(argv)
    proposal = None
    # ValueError: AnchorCoverageError, ConfigError, a malformed json (register_coco_json).
    with one_line_errors(PROG):
        if args.write_config is not None and os.path.exists(args.write_config) and not args.force:
            raise AnchorCoverageError(f"--write-config {args.write_config} exists; pass --force to replace it")
        if args.propose_settings or args.write_config is not None:
            proposal, cfg, name = propose_settings(args)
        else:
            cfg = load_config(args.config_file, user_dataset_opts(args) + list(args.opts))
            name = dataset_to_analyse(args, cfg)
        report = analyze_anchor_coverage(cfg, name, args.split, args.max_images)
        if proposal is not None:
            proposal.with_anchors(report, AnchorSetting.from_config(cfg))
            print(proposal.format() + "\n")
    print(format_anchor_coverage_report(report))
    output = args.output or cfg.OUTPUT_DIR
    with one_line_errors(PROG):
        os.makedirs(output, exist_ok=True)
        png_path = plot_anchor_coverage(report, os.path.join(output, "anchor_coverage.png"))
        json_path = os.path.join(output, "anchor_coverage.json")
        data = report.to_dict()
        if proposal is not None:
            data["settings_from_the_data"] = proposal.to_dict()
        with open(json_path, "w") as f:
            json.dump(data, f, indent=2)
        print(f"\nWrote {png_path} and {json_path}")
        if args.write_config is not None:
            print(f"Wrote {write_config(args, cfg, proposal)}: the proposed settings on {args.config_file}")
