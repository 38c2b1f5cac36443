"""
tools/demo.py: draw RetinaNetPlugin's detections on images or a video, like Detectron2's
demo/demo.py: the config from the command line, then each image (or every frame of a video)
through `DetectionVisualizer` and out to a file.

    python tools/demo.py --config-file configs/retinanet_R50.yaml --input img1.jpg 'images/*.jpg' images/ \
        --output out/ MODEL.WEIGHTS output/retinanet_R50/model_final.pth
    python tools/demo.py --config-file configs/retinanet_R50.yaml --video-input in.mp4 --output out/
    python tools/demo.py --config-file configs/retinanet_R50.yaml --input huge.png --output out/ \
        --tile 512 --overlap 0.2 --opts MODEL.WEIGHTS output/retinanet_R50/model_final.pth

Annotated images keep their file names inside the --output directory (or go to --output
itself when it is a file name and there is one input); the annotated video is mp4v with the
input's frame rate and size. With --tile, each image is cut into overlapping tiles of that
size, fed at native resolution (no resize; retina_plugin/inference/tiling.py). With --tta,
each image (or tile) is detected at several sizes and flipped, merged (docs/tta.md).
"""
import logging
import time

import cv2
import torch
from detectron2.utils.logger import setup_logger

from ..analysis.detections.class_thresholds import load_class_thresholds
from ..config import load_config
from ..data.catalog import register_config_datasets
from ..inference.media import (
    InputFileError,
    image_output_paths,
    open_video,
    open_video_writer,
    read_bgr_image,
    resolve_image_inputs,
    video_output_path,
)
from ..inference.predictor import dataset_metadata
from ..inference.visualizer import DetectionVisualizer
from .arguments import ToolParser, one_line_errors

PROG = "demo"

logger = logging.getLogger("demo")


def demo_config(
    config_file, opts, confidence_threshold=None, tile=None, overlap=None, tile_batch=None, tta=False,
    extra_flags=(), class_names=None,
):  # fmt: skip
    """
    The config: defaults, then `config_file`, then the demo's flags (and `extra_flags`, KEY VALUE
    pairs of the calling tool), then `opts` (KEY VALUE), and the per-class score thresholds:
    `confidence_threshold` is one number for every class, or a thresholds.yaml of
    tools/analyze_results.py (class name: threshold), read for `class_names` or else the class
    names of DATASETS.TEST[0]. Returns (cfg, per-class thresholds or None).
    """
    class_threshold_file = None
    if confidence_threshold is not None and not _is_number(confidence_threshold):
        class_threshold_file, confidence_threshold = confidence_threshold, None
    flags = [("MODEL.RETINANET.SCORE_THRESH_TEST", confidence_threshold), ("MODEL.RETINA_PLUGIN.TILE_SIZE", tile),
             ("MODEL.RETINA_PLUGIN.TILE_OVERLAP", overlap), ("MODEL.RETINA_PLUGIN.TILE_BATCH", tile_batch),
             ("TEST.AUG.ENABLED", True if tta else None), *extra_flags]
    flag_opts = [item for key, value in flags if value is not None for item in (key, value)]
    cfg = load_config(config_file, flag_opts + list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available; running on the CPU (set MODEL.DEVICE to silence this).")
        cfg.MODEL.DEVICE = "cpu"
    register_config_datasets(cfg)  # the embedded dataset's class names, for the labels
    class_thresholds = None
    if class_threshold_file is not None:
        names = class_names or dataset_metadata(cfg).get("thing_classes", None)
        if not names:
            raise InputFileError(
                f"--confidence-threshold {class_threshold_file}: per-class thresholds need the class names of "
                "a registered DATASETS.TEST[0] (or --confidence-threshold NUMBER)"
            )
        class_thresholds = load_class_thresholds(class_threshold_file, names[: cfg.MODEL.RETINANET.NUM_CLASSES])
        # the model keeps what passes the lowest; each class is then cut at its own
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = min(class_thresholds)
    cfg.freeze()
    return cfg, class_thresholds


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def annotate_images(cfg, inputs, output, class_thresholds=None):
    """Annotate the images of `inputs` (files, globs, folders); write them under `output`; log their detections."""
    paths = resolve_image_inputs(inputs)
    outputs = image_output_paths(paths, output)
    demo = DetectionVisualizer(cfg, class_thresholds=class_thresholds)
    for path, out_path in zip(paths, outputs):
        image = read_bgr_image(path)
        start = time.perf_counter()
        predictions, vis_output = demo.run_on_image(image)
        elapsed = time.perf_counter() - start
        logger.info(f"{path}: detected {len(predictions['instances'])} instances in {elapsed:.2f}s -> {out_path}")
        if not cv2.imwrite(out_path, vis_output.get_image()[:, :, ::-1]):
            raise InputFileError(f"Cannot write image {out_path}")


def annotate_video(cfg, video_input, output, class_thresholds=None):
    """Annotate every frame of `video_input` and write them to an mp4v video."""
    open_video(video_input).release()  # a bad path fails before the model is built
    demo = DetectionVisualizer(cfg, class_thresholds=class_thresholds)
    video = open_video(video_input)
    out_path = video_output_path(video_input, output)
    writer = open_video_writer(video, out_path)
    start = time.perf_counter()
    num_frames = 0
    try:
        for vis_frame in demo.run_on_video(video):
            writer.write(vis_frame)
            num_frames += 1
    finally:
        video.release()
        writer.release()
    per_frame = (time.perf_counter() - start) / max(num_frames, 1)
    logger.info(f"{video_input}: wrote {num_frames} annotated frames to {out_path} ({per_frame:.2f}s per frame)")


def get_parser():
    """The demo's command-line arguments."""
    parser = ToolParser(prog=PROG, description="RetinaNetPlugin demo: draw detections on images or a video", opts_example="MODEL.WEIGHTS model.pth MODEL.DEVICE cpu")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        help="image files, glob patterns (quote them, e.g. 'images/*.jpg') or directories (all their images)",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    parser.add_argument(
        "--output",
        required=True,
        help="a directory for the annotated images or video, or a file name when there is one input",
    )
    parser.add_argument(
        "--confidence-threshold",
        default="0.5",
        metavar="SCORE|THRESHOLDS.yaml",
        help="minimum score of a drawn detection (sets MODEL.RETINANET.SCORE_THRESH_TEST), or one per class "
        "from the thresholds.yaml of tools/analyze_results.py",
    )
    parser.add_argument(
        "--tile",
        type=int,
        metavar="SIZE",
        help="detect tile by tile, in SIZE x SIZE tiles at native resolution (sets MODEL.RETINA_PLUGIN.TILE_SIZE)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        metavar="FRAC",
        help="fraction of a tile shared by neighbouring tiles (sets MODEL.RETINA_PLUGIN.TILE_OVERLAP)",
    )
    parser.add_argument(
        "--tile-batch",
        type=int,
        metavar="N",
        help="tiles per forward pass (sets MODEL.RETINA_PLUGIN.TILE_BATCH)",
    )
    parser.add_argument(
        "--tta", action="store_true",
        help="test-time augmentation: each image at TEST.AUG.MIN_SIZES, flipped with TEST.AUG.FLIP (sets TEST.AUG.ENABLED)",
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="retina_plugin")
    setup_logger(name="demo").info(f"Arguments: {args}")
    with one_line_errors(PROG):
        cfg, class_thresholds = demo_config(
            args.config_file, args.opts, args.confidence_threshold, args.tile, args.overlap, args.tile_batch, args.tta
        )
        if args.input:
            annotate_images(cfg, args.input, args.output, class_thresholds)
        else:
            annotate_video(cfg, args.video_input, args.output, class_thresholds)
