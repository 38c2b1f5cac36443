"""
tools/predict_raster.py: detect objects in georeferenced rasters (GeoTIFF, anything GDAL reads), window by window, and
write them as polygons in the raster's CRS.

    python tools/predict_raster.py --config-file configs/retinanet_R50.yaml --input scene.tif \
        --output detections.gpkg --tile 512 --overlap 0.2 --opts MODEL.WEIGHTS model_final.pth
    python tools/predict_raster.py --config-file CFG --input rasters/ more.tif --output dets.geojson \
        --bands 1,2,3,4 --coco-json dets.json --opts MODEL.WEIGHTS model.pth

The raster is never loaded whole: TILE_BATCH windows at a time are read with rasterio and run
at native resolution; windows that are all nodata are skipped. Bands are read in the raster's
order (or --bands) and given to the model in its INPUT.FORMAT. Each window is capped by
TEST.DETECTIONS_PER_IMAGE; the raster by nothing unless MODEL.RETINA_PLUGIN.TILED_DETECTIONS_PER_IMAGE
is set. See docs/geospatial.md.

With --workers N (a LocalCluster on this machine) or --scheduler ADDRESS (a running Dask
cluster), blocks of windows run as Dask tasks, each kept as a part in `<output>.parts/`; a
rerun of the same command runs only the unfinished parts (retina_plugin/geo/dask_predict.py,
docs/distributed_prediction.md):

    python tools/predict_raster.py --config-file CFG --input 'ortho/**/*.tif' --output dets.gpkg \
        --workers 4 --opts MODEL.WEIGHTS model.pth
"""
from detectron2.utils.logger import setup_logger

from ..geo.blocks import DEFAULT_BLOCK_WINDOWS
from ..geo.inputs import raster_paths
from ..geo.predict import predict_rasters, with_raster_tile
from ..data.raster import parse_bands
from .arguments import ToolParser, one_line_errors
from .demo import demo_config

PROG = "predict_raster"


def raster_config(config_file, opts, confidence_threshold=None, tile=None, overlap=None, tile_batch=None, bands=None, tta=False, class_names=None):
    """
    The config of tools/predict_raster.py: as the demo's (`demo_config`), with `bands` setting
    MODEL.RETINA_PLUGIN.RASTER_BANDS and TILE_SIZE 512 where nothing sets one (`with_raster_tile`).
    Returns (cfg, per-class thresholds or None).
    """
    extra = [("MODEL.RETINA_PLUGIN.RASTER_BANDS", list(bands) if bands else None)]
    cfg, thresholds = demo_config(config_file, opts, confidence_threshold, tile, overlap, tile_batch, tta, extra, class_names)
    return with_raster_tile(cfg), thresholds


def get_parser():
    parser = ToolParser(prog=PROG, description="RetinaNetPlugin on georeferenced rasters")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--input", required=True, nargs="+",
        help="raster files, folders (all their .tif/.tiff/.vrt/.img/.jp2), globs, text files of paths (.txt), STAC ItemCollection JSON files",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="the detections: .gpkg, .geojson, .shp or .parquet (GeoParquet)")
    parser.add_argument("--tile", type=int, metavar="SIZE", help="window side in pixels (sets MODEL.RETINA_PLUGIN.TILE_SIZE; default: the config's, else 512)")
    parser.add_argument("--overlap", type=float, metavar="FRAC", help="fraction of a window shared by neighbours (sets TILE_OVERLAP)")
    parser.add_argument("--tile-batch", type=int, metavar="N", help="windows per forward pass (sets TILE_BATCH)")
    parser.add_argument("--bands", metavar="1,2,3", help="1-based bands to read, red, green, blue first (sets RASTER_BANDS)")
    parser.add_argument(
        "--confidence-threshold", metavar="SCORE|THRESHOLDS.yaml",
        help="minimum score kept (sets MODEL.RETINANET.SCORE_THRESH_TEST), or one per class from analyze_results' thresholds.yaml",
    )  # fmt: skip
    parser.add_argument("--classes", metavar="A,B,...", help="class names of the model's ids (default: those of DATASETS.TEST[0])")
    parser.add_argument("--coco-json", metavar="FILE", help="also write the detections in COCO results format, pixel coordinates")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation of each window (sets TEST.AUG.ENABLED)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    scale = parser.add_argument_group("on Dask (docs/distributed_prediction.md); default: one process")
    scale.add_argument("--workers", type=int, metavar="N", help="start a LocalCluster of N worker processes on this machine")
    scale.add_argument("--threads-per-worker", type=int, metavar="T", help="threads of each worker of --workers (default 1)")
    scale.add_argument("--scheduler", metavar="ADDRESS", help="use the running Dask cluster at ADDRESS (tcp://host:8786)")
    scale.add_argument(
        "--block-windows", type=int, metavar="N", default=None,
        help=f"a task is a block of N x N windows of a raster (default {DEFAULT_BLOCK_WINDOWS})",
    )  # fmt: skip
    return parser


def check_scale_flags(parser, args) -> None:
    """The Dask flags: positive, --workers or --scheduler (not both), the others only with one of them."""
    if args.workers is not None and args.scheduler:
        parser.error("--workers starts a cluster, --scheduler uses a running one: give one of them")
    for flag, value in (("--workers", args.workers), ("--threads-per-worker", args.threads_per_worker), ("--block-windows", args.block_windows)):
        if value is not None and value < 1:
            parser.error(f"{flag} {value}: must be >= 1")
    if args.workers is None and not args.scheduler:
        for flag, value in (("--threads-per-worker", args.threads_per_worker), ("--block-windows", args.block_windows)):
            if value is not None:
                parser.error(f"{flag} is a setting of a run on Dask: add --workers N or --scheduler ADDRESS")
    if args.scheduler and args.threads_per_worker is not None:
        parser.error("--threads-per-worker sets the workers of --workers; a running cluster (--scheduler) has its own")
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    check_scale_flags(parser, args)
    setup_logger(name="fvcore")
    setup_logger(name="retina_plugin")
    setup_logger(name="predict_raster")
    with one_line_errors(PROG):
        classes = args.classes.split(",") if args.classes else None
        cfg, thresholds = raster_config(
            args.config_file, args.opts, args.confidence_threshold, args.tile, args.overlap, args.tile_batch,
            parse_bands(args.bands), args.tta, classes,
        )  # fmt: skip
        paths = raster_paths(args.input)
        if args.workers is None and not args.scheduler:
            predict_rasters(cfg, paths, args.output, args.coco_json, classes, thresholds, not args.no_progress)
            return
        from ..geo.dask_predict import predict_rasters_on_dask  # Dask is imported on this path only

        predict_rasters_on_dask(
            cfg, paths, args.output, args.coco_json, classes, thresholds, not args.no_progress, workers=args.workers,
            threads_per_worker=args.threads_per_worker, scheduler=args.scheduler,
            block_windows=args.block_windows or DEFAULT_BLOCK_WINDOWS,
        )  # fmt: skip
