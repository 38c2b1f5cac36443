"""
What every tool shares on the command line: one parser class (`ToolParser`: errors in one
line, Detectron2's trailing KEY VALUE config options, `--opts` as their alias), Detectron2's
`default_argument_parser` for the training tools, one spelling of a user's COCO-format dataset
(`--train-json/--train-images`, `--test-json/--test-images`), of a DOTA folder (`--train-dota`,
`--test-dota`, `--dota-classes`) and of a georeferenced one
(`--train-raster/--train-vectors`, `--test-raster/--test-vectors`), and `one_line_errors`: every
`UserError` ends a tool as `<tool>: error: <message>`, status 2.
"""
import argparse
import contextlib
import logging
import re
import sys
from pathlib import Path
from typing import Optional

import torch
from detectron2.engine import default_argument_parser

from ..config import ConfigError, load_config
from ..errors import UserError

logger = logging.getLogger(__name__)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line `prog: error: ...` (status 2), without the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# A config key as Detectron2 spells it on the command line: upper case, dotted (MODEL.WEIGHTS).
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


class ToolParser(OneLineParser):
    """
    The parser of a tool: one-line errors, and config options as Detectron2's tools take them,
    `KEY VALUE` pairs, also after `--opts` (Detectron2's demo spelling), anywhere on the line:
    a run of options starts at a config key (`MODEL.WEIGHTS`) or `--opts` and ends at the tool's
    next flag, so `--input a.png b.png MODEL.WEIGHTS w.pth --tile 512` gives the two images, the
    option and the tile size. All of them end up in `args.opts`, in the order given.
    """

    def __init__(self, *args, opts_example="MODEL.WEIGHTS model.pth", **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--opts", dest="opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
            help=f"config options as KEY VALUE pairs, merged last (the same as KEY VALUE without --opts), e.g. {opts_example}",
        )  # fmt: skip

    def parse_args(self, args=None, namespace=None):
        flags, opts = self._config_options(list(sys.argv[1:] if args is None else args))
        return super().parse_args(flags + (["--opts", *opts] if opts else []), namespace)

    def _config_options(self, argv):
        """(the tool's own arguments, the config's KEY VALUE options) of a command line."""
        flags, opts, in_options = [], [], False
        for token in argv:
            if token == "--opts":
                in_options = True
                continue
            if token.split("=", 1)[0] in self._option_string_actions:
                in_options = False
            elif CONFIG_KEY.match(token):
                in_options = True
            (opts if in_options else flags).append(token)
        return flags, opts


def argument_parser(epilog=None):
    """Detectron2's default_argument_parser (trailing KEY VALUE opts) plus the dataset flags, COCO json and raster."""
    return add_raster_dataset_arguments(add_dataset_arguments(default_argument_parser(epilog=epilog)))


def add_dataset_arguments(parser):
    """--train-json/--train-images, --test-json/--test-images: a user's COCO-format dataset; --train-dota, --test-dota: a DOTA folder."""
    parser.add_argument("--train-json", help="COCO-format annotation file to train on")
    parser.add_argument("--train-images", help="image folder of --train-json")
    parser.add_argument("--test-json", help="COCO-format annotation file to evaluate on")
    parser.add_argument("--test-images", help="image folder of --test-json")
    parser.add_argument("--train-dota", metavar="DIR", help="DOTA folder (images/, labelTxt/) to train on")
    parser.add_argument("--test-dota", metavar="DIR", help="DOTA folder (images/, labelTxt/) to evaluate on")
    parser.add_argument("--dota-classes", metavar="A,B,...", help="the DOTA folders' class names, comma-separated (default: DOTA v1.0's 15)")
    return parser


def add_raster_dataset_arguments(parser):
    """--train-raster/--train-vectors, --test-raster/--test-vectors, --label-column: tiles of rasters (docs/geospatial_training.md)."""
    parser.add_argument("--train-raster", help="georeferenced raster (GeoTIFF) to cut training tiles from")
    parser.add_argument("--train-vectors", help="the objects of --train-raster as polygons (.gpkg, .geojson, .shp; any CRS)")
    parser.add_argument("--test-raster", help="georeferenced raster to cut evaluation tiles from")
    parser.add_argument("--test-vectors", help="the objects of --test-raster")
    parser.add_argument("--label-column", help="the vectors' class column (default: 'label' where there is one, else one class)")
    return parser


def user_dataset_opts(args, skip_bad_images: bool = False) -> list:
    """
    Register --train-json/--test-json, --train-dota/--test-dota or --train-raster/--test-raster;
    the opts pointing DATASETS.TRAIN/TEST and NUM_CLASSES at them. `skip_bad_images` (the config's
    DATALOADER.SKIP_UNREADABLE_IMAGES) lets the training json register with images of another
    size than it says, counted in one line (the loader then leaves them out); a test json never.
    Whether the boxes suit the model is `data.catalog.check_dataset_files`'s to check.
    """
    from ..data import register_coco_json

    opts = []
    for split, key in (("train", "DATASETS.TRAIN"), ("test", "DATASETS.TEST")):
        json_file, image_root = getattr(args, f"{split}_json"), getattr(args, f"{split}_images")
        if json_file is None and image_root is None:
            continue
        if json_file is None or image_root is None:
            raise ConfigError(f"--{split}-json and --{split}-images go together (got {json_file!r}, {image_root!r})")
        for other in ("raster", "dota"):
            if getattr(args, f"{split}_{other}", None) is not None:
                raise ConfigError(f"--{split}-json and --{split}-{other}: one {split} dataset, not both")
        name = f"user_{split}_{Path(json_file).stem}"
        metadata = register_coco_json(name, json_file, image_root, skip_bad_images=skip_bad_images and split == "train")
        opts += [key, (name,)]
        if split == "train":
            opts += ["MODEL.RETINANET.NUM_CLASSES", len(metadata.thing_classes)]
    return opts + _dota_dataset_opts(args) + _raster_dataset_opts(args)


def _dota_dataset_opts(args) -> list:
    """Register --train-dota/--test-dota as `dota_<split>_<folder name>`, with --dota-classes (default DOTA v1.0's)."""
    from ..data import register_dota

    classes = getattr(args, "dota_classes", None)
    if classes is not None:
        classes = [c.strip() for c in classes.split(",")]
        if not all(classes) or len(set(classes)) < len(classes):
            raise ConfigError(f"--dota-classes {args.dota_classes!r}: give distinct, non-empty names separated by commas")
    opts = []
    for split, key in (("train", "DATASETS.TRAIN"), ("test", "DATASETS.TEST")):
        folder = getattr(args, f"{split}_dota", None)
        if folder is None:
            continue
        if getattr(args, f"{split}_raster", None) is not None:
            raise ConfigError(f"--{split}-dota and --{split}-raster: one {split} dataset, not both")
        name = f"dota_{split}_{Path(folder).resolve().name}"
        metadata = register_dota(name, folder, classes)
        opts += [key, (name,)]
        if split == "train":
            opts += ["MODEL.RETINANET.NUM_CLASSES", len(metadata.thing_classes)]
    if classes is not None and not opts:
        raise ConfigError("--dota-classes names the classes of --train-dota/--test-dota: give a DOTA folder")
    return opts


def _raster_dataset_opts(args) -> list:
    """Register --train-raster/--test-raster as `raster_<split>_<stem>`, the test split with the training split's classes."""
    pairs = {s: (getattr(args, f"{s}_raster", None), getattr(args, f"{s}_vectors", None)) for s in ("train", "test")}
    for split, (raster, vectors) in pairs.items():
        if (raster is None) != (vectors is None):
            raise ConfigError(f"--{split}-raster and --{split}-vectors go together (got {raster!r}, {vectors!r})")
    if all(raster is None for raster, _ in pairs.values()):
        return []
    try:
        from ..geo.dataset import raster_tiling_from_config, register_raster_dataset
    except ImportError as e:
        raise ConfigError(f"--train-raster/--test-raster need the geo extra (rasterio, geopandas; `make setup`): {e}") from None
    # The tiles depend on the config (TILE_SIZE, RASTER_BANDS, INPUT.FORMAT, PIXEL_MEAN): it is
    # loaded here as the tool loads it, without the dataset opts this returns.
    cfg = load_config(args.config_file, list(getattr(args, "opts", [])))
    tiling = raster_tiling_from_config(cfg)
    opts, class_names = [], None
    for split, key in (("train", "DATASETS.TRAIN"), ("test", "DATASETS.TEST")):
        raster, vectors = pairs[split]
        if raster is None:
            continue
        name = f"raster_{split}_{Path(raster).stem}"
        metadata = register_raster_dataset(
            name, raster, vectors, label_column=getattr(args, "label_column", None), class_names=class_names, **tiling
        )
        opts += [key, (name,)]
        if split == "train":
            class_names = metadata.thing_classes
            opts += ["MODEL.RETINANET.NUM_CLASSES", len(class_names)]
    size, train_sizes = tiling["tile_size"], tuple(cfg.INPUT.MIN_SIZE_TRAIN)
    if pairs["train"][0] is not None and (train_sizes != (size,) or cfg.INPUT.MAX_SIZE_TRAIN < size):
        logger.warning(
            f"raster tiles are {size} px but INPUT.MIN_SIZE_TRAIN {train_sizes}, MAX_SIZE_TRAIN "
            f"{cfg.INPUT.MAX_SIZE_TRAIN} resize them: INPUT.MIN_SIZE_TRAIN ({size},) INPUT.MAX_SIZE_TRAIN {size} trains "
            "at the raster's resolution"
        )
    return opts


def check_device(device: str, num_gpus: int = 1):
    """A CUDA device the machine has, or a ConfigError saying to use MODEL.DEVICE cpu."""
    if not device.startswith("cuda"):
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise ConfigError(
            f"MODEL.DEVICE is {device!r} but this machine has no CUDA device: add MODEL.DEVICE cpu "
            "(--num-gpus N then trains in N CPU processes)"
        )
    if num_gpus > available:
        raise ConfigError(f"--num-gpus {num_gpus} but this machine has {available} CUDA device(s)")


def worker_user_error(error) -> Optional[UserError]:
    """
    The UserError a worker process of Detectron2's `launch` stopped on, from the
    ProcessRaisedException `error` (its traceback text names the class only), as a ConfigError
    with its one-line message; None when the worker stopped on something else (a bug).
    """
    name, _, message = str(error).strip().splitlines()[-1].partition(": ")
    return ConfigError(message) if name.rsplit(".", 1)[-1] in _user_error_names() else None


def _user_error_names(cls=UserError) -> set:
    """The names of UserError and all its subclasses."""
    return {cls.__name__}.union(*(_user_error_names(sub) for sub in cls.__subclasses__()))


@contextlib.contextmanager
def one_line_errors(prog: str):
    """
    Inside: a UserError (bad input the user can fix), or an OSError (a file that cannot be read
    or written: its message names it), exits with `prog: error: <its message>` (status 2).
    """
    try:
        yield
    except (UserError, OSError) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
