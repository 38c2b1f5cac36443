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
size, fed at native resolution (no resize; see retina_plugin/inference/tiling.py). With --tta,
each image (or tile) is detected at several sizes and flipped, merged (docs/tta.md).
"""
import argparse

from detectron2.utils.logger import setup_logger

import retina_plugin  # noqa: F401  (registers the components)
from retina_plugin.engine import add_opts_argument, one_line_errors
from retina_plugin.inference.demo import annotate_images, annotate_video, demo_config
from retina_plugin.inference.predictor import DemoInputError


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
    return add_opts_argument(parser, "MODEL.WEIGHTS model.pth MODEL.DEVICE cpu")


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="retina_plugin")
    setup_logger(name="demo").info(f"Arguments: {args}")
    with one_line_errors("demo.py", (DemoInputError,)):
        cfg, class_thresholds = demo_config(
            args.config_file, args.opts, args.confidence_threshold, args.tile, args.overlap, args.tile_batch, args.tta
        )
        if args.input:
            annotate_images(cfg, args.input, args.output, class_thresholds)
        else:
            annotate_video(cfg, args.video_input, args.output, class_thresholds)


if __name__ == "__main__":
    main()
