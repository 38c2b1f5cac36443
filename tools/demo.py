#!/usr/bin/env python
"""
Draw RetinaNetPlugin's detections on images or a video, like Detectron2's demo/demo.py.

    python tools/demo.py --config-file configs/retinanet_R50.yaml --input img1.jpg img2.jpg \
        --output out/ --opts MODEL.WEIGHTS output/retinanet_R50/model_final.pth
    python tools/demo.py --config-file configs/retinanet_R50.yaml --input 'images/*.jpg' --output out/
    python tools/demo.py --config-file configs/retinanet_R50.yaml --input images/ --output out/
    python tools/demo.py --config-file configs/retinanet_R50.yaml --video-input in.mp4 --output out/
    python tools/demo.py --config-file configs/retinanet_R50.yaml --input huge.png --output out/ \
        --tile 512 --overlap 0.2 --opts MODEL.WEIGHTS output/retinanet_R50/model_final.pth

Annotated images keep their file names inside the --output directory (or go to --output
itself when it is a file name and there is one input); the annotated video is mp4v with the
input's frame rate and size. With --tile, each image is cut into overlapping tiles of that
size, fed at native resolution (no resize; see retina_plugin/tiling.py).
"""
import argparse
import os
import sys
import time

import cv2
import torch
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retina_plugin.config import ConfigError, load_config  # noqa: E402
import retina_plugin  # noqa: E402,F401  (registers the components)
from retina_plugin.engine import register_config_datasets  # noqa: E402
from retina_plugin.predictor import (  # noqa: E402
    DemoInputError,
    DetectionVisualizer,
    image_output_paths,
    open_video,
    open_video_writer,
    read_bgr_image,
    resolve_image_inputs,
    video_output_path,
)


def get_parser():
    """The demo's command-line arguments."""
    parser = argparse.ArgumentParser(description="RetinaNetPlugin demo: draw detections on images or a video")
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
        type=float,
        default=0.5,
        help="minimum score of a drawn detection (sets MODEL.RETINANET.SCORE_THRESH_TEST)",
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
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config options as KEY VALUE pairs, merged last, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu",
    )
    return parser


def setup_cfg(args, logger):
    """The config: defaults, then --config-file, then --confidence-threshold and the tiling flags, then --opts."""
    flags = [("MODEL.RETINANET.SCORE_THRESH_TEST", args.confidence_threshold), ("MODEL.RETINA_PLUGIN.TILE_SIZE", args.tile),
             ("MODEL.RETINA_PLUGIN.TILE_OVERLAP", args.overlap), ("MODEL.RETINA_PLUGIN.TILE_BATCH", args.tile_batch)]
    flag_opts = [item for key, value in flags if value is not None for item in (key, value)]
    try:
        cfg = load_config(args.config_file, flag_opts + list(args.opts))
    except ConfigError as e:
        raise DemoInputError(str(e)) from None
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available; running on the CPU (set MODEL.DEVICE to silence this).")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    register_config_datasets(cfg)  # the embedded dataset's class names, for the labels
    return cfg


def run_on_images(demo, paths, outputs, logger):
    """Annotate each image of `paths`, write it to the matching entry of `outputs`, log its detections."""
    for path, out_path in zip(paths, outputs):
        image = read_bgr_image(path)
        start = time.perf_counter()
        predictions, vis_output = demo.run_on_image(image)
        elapsed = time.perf_counter() - start
        num_detections = len(predictions["instances"])
        logger.info(f"{path}: detected {num_detections} instances in {elapsed:.2f}s -> {out_path}")
        if not cv2.imwrite(out_path, vis_output.get_image()[:, :, ::-1]):
            raise DemoInputError(f"Cannot write image {out_path}")


def run_on_video(demo, video_input, output, logger):
    """Annotate every frame of `video_input` and write them to an mp4v video."""
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
    elapsed = time.perf_counter() - start
    per_frame = elapsed / max(num_frames, 1)
    logger.info(
        f"{video_input}: wrote {num_frames} annotated frames to {out_path} ({per_frame:.2f}s per frame)"
    )


def main(argv=None):
    """Parse the arguments, check the inputs, build the model and annotate the inputs."""
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="retina_plugin")
    logger = setup_logger(name="demo")
    logger.info(f"Arguments: {args}")
    try:
        cfg = setup_cfg(args, logger)
        if args.input:
            paths = resolve_image_inputs(args.input)
            outputs = image_output_paths(paths, args.output)
            demo = DetectionVisualizer(cfg)
            run_on_images(demo, paths, outputs, logger)
        else:
            open_video(args.video_input).release()
            demo = DetectionVisualizer(cfg)
            run_on_video(demo, args.video_input, args.output, logger)
    except DemoInputError as e:
        sys.exit(f"demo.py: error: {e}")


if __name__ == "__main__":
    main()
