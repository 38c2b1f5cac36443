"""
What tools/demo.py does, as Detectron2's demo/demo.py does it: the config from the command
line, then each image (or every frame of a video) through `DetectionVisualizer` and out to a file.
"""
import logging
import time

import cv2
import torch

from ..analysis.detections.class_thresholds import ThresholdFileError, load_class_thresholds
from ..config import ConfigError, load_config
from ..engine.arguments import register_config_datasets
from .predictor import (
    DemoInputError,
    DetectionVisualizer,
    dataset_metadata,
    image_output_paths,
    open_video,
    open_video_writer,
    read_bgr_image,
    resolve_image_inputs,
    video_output_path,
)

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
    try:
        cfg = load_config(config_file, flag_opts + list(opts))
    except ConfigError as e:
        raise DemoInputError(str(e)) from None
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available; running on the CPU (set MODEL.DEVICE to silence this).")
        cfg.MODEL.DEVICE = "cpu"
    register_config_datasets(cfg)  # the embedded dataset's class names, for the labels
    class_thresholds = None
    if class_threshold_file is not None:
        names = class_names or dataset_metadata(cfg).get("thing_classes", None)
        if not names:
            raise DemoInputError(
                f"--confidence-threshold {class_threshold_file}: per-class thresholds need the class names of "
                "a registered DATASETS.TEST[0] (or --confidence-threshold NUMBER)"
            )
        try:
            class_thresholds = load_class_thresholds(class_threshold_file, names[: cfg.MODEL.RETINANET.NUM_CLASSES])
        except ThresholdFileError as e:
            raise DemoInputError(str(e)) from None
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
            raise DemoInputError(f"Cannot write image {out_path}")


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
