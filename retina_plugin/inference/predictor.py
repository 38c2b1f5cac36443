"""
Run RetinaNetPlugin on images and videos and draw its detections, like Detectron2's
`demo/predictor.py` (VisualizationDemo).

`DetectionVisualizer` wraps Detectron2's `DefaultPredictor` (as `RetinaPredictor`: checkpoint loading, BGR input,
test-time resizing), or `TiledPredictor` when cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0 (large
images, tile by tile at native resolution), and Detectron2's `Visualizer` /
`VideoVisualizer`. The helper functions turn the demo's command-line paths into input images,
output file names and video writers, raising `DemoInputError` (a message naming the
offending path) for anything missing or unreadable.
"""
import glob
import logging
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

from ..engine.checkpoint import RetinaCheckpointer
from ..deploy.quantization import apply_int8_config
from .tiling import TiledInference
from .tta import RetinaNetWithTTA

__all__ = [
    "IMAGE_EXTENSIONS",
    "DemoInputError",
    "DetectionVisualizer",
    "RetinaPredictor",
    "TiledPredictor",
    "dataset_metadata",
    "resolve_image_inputs",
    "read_bgr_image",
    "image_output_paths",
    "open_video",
    "video_output_path",
    "open_video_writer",
]

logger = logging.getLogger(__name__)

# File name endings (lower case) that count as images when a directory is given as input.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Codec and file ending of the annotated video (OpenCV's FFmpeg build always has mp4v).
VIDEO_FOURCC = "mp4v"
VIDEO_EXTENSION = ".mp4"


class DemoInputError(ValueError):
    """An input or output path of the demo cannot be used; the message names the path."""


class RetinaPredictor(DefaultPredictor):
    """
    Detectron2's DefaultPredictor loading cfg.MODEL.WEIGHTS with `RetinaCheckpointer`
    (weights-only `.pth`, restricted `.pkl`) instead of plain unpickling, then made int8
    when cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE is "int8". With cfg.TEST.AUG.ENABLED it detects
    with test-time augmentation (`self.tta`, retina_plugin.inference.tta): the versions are
    resized from the image as given, INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST are not used.
    """

    def __init__(self, cfg):
        no_weights = cfg.clone()
        no_weights.defrost()
        no_weights.MODEL.WEIGHTS = ""
        super().__init__(no_weights)
        self.cfg = cfg.clone()
        RetinaCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        apply_int8_config(cfg, self.model)
        self.tta = RetinaNetWithTTA(self.cfg, self.model) if cfg.TEST.AUG.ENABLED else None
        if self.tta is not None:
            logger.info(self.tta.describe())

    def __call__(self, original_image: np.ndarray) -> Dict[str, Instances]:
        """
        Args:
            original_image: an image of shape (H, W, C), uint8, in BGR order (as OpenCV reads it).
        Returns:
            {"instances": Instances} with boxes in the image's pixel coordinates.
        """
        if self.tta is None:
            return super().__call__(original_image)
        image = self._chw_image(original_image)
        return self.tta([{"image": image, "height": image.shape[1], "width": image.shape[2]}])[0]

    def _chw_image(self, original_image: np.ndarray) -> torch.Tensor:
        """(H, W, C) BGR uint8 -> a (C, H, W) uint8 tensor in cfg.INPUT.FORMAT, at the image's own size."""
        if self.input_format == "RGB":
            original_image = original_image[:, :, ::-1]
        # ascontiguousarray copies (as uint8) only a view with negative strides.
        return torch.from_numpy(np.ascontiguousarray(original_image)).permute(2, 0, 1)


class TiledPredictor(RetinaPredictor):
    """
    RetinaPredictor with tiled inference: detects in one image of any size, tile by tile
    (cfg.MODEL.RETINA_PLUGIN.TILE_SIZE, TILE_OVERLAP, TILE_BATCH; `retina_plugin.inference.tiling`).
    Tiles are fed at native resolution: INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST are not used. With
    cfg.TEST.AUG.ENABLED every tile is detected with test-time augmentation (its versions resized
    to TEST.AUG.MIN_SIZES, flipped with FLIP), then the tiles are merged as without it.

    Attributes:
        model (nn.Module): the detector, in eval mode.
        tiled (TiledInference): runs `model` over the tiles.
    """

    def __init__(self, cfg):
        if cfg.MODEL.RETINA_PLUGIN.TILE_SIZE < 1:
            raise ValueError(
                f"cfg.MODEL.RETINA_PLUGIN.TILE_SIZE = {cfg.MODEL.RETINA_PLUGIN.TILE_SIZE!r}: "
                "TiledPredictor needs a tile size >= 1"
            )
        super().__init__(cfg)
        self.tiled = TiledInference(self.cfg, self.tta or self.model)

    def __call__(self, original_image: np.ndarray) -> Dict[str, Instances]:
        """
        Args:
            original_image: an image of shape (H, W, C), uint8, in BGR order (as OpenCV reads
                it); turned into RGB when cfg.INPUT.FORMAT is "RGB", as DefaultPredictor does.
        Returns:
            {"instances": Instances} with boxes in the image's pixel coordinates.
        """
        # Tiles are sliced from the uint8 image and made float one batch at a time.
        return {"instances": self.tiled.detect(self._chw_image(original_image))}


def dataset_metadata(cfg) -> Metadata:
    """
    The metadata (class names, colors) used to label detections: that of
    `cfg.DATASETS.TEST[0]` when that dataset is registered and names at least
    `cfg.MODEL.RETINANET.NUM_CLASSES` classes, else empty metadata (labels show class ids).
    """
    if not len(cfg.DATASETS.TEST):
        return Metadata(name="")
    name = cfg.DATASETS.TEST[0]
    if name not in DatasetCatalog.list():
        logger.warning(f"Dataset '{name}' of cfg.DATASETS.TEST is not registered; labels show class ids.")
        return Metadata(name="")
    metadata = MetadataCatalog.get(name)
    thing_classes = metadata.get("thing_classes", None)
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    if thing_classes is not None and len(thing_classes) < num_classes:
        logger.warning(
            f"Dataset '{name}' names {len(thing_classes)} classes but the model has "
            f"{num_classes}; labels show class ids."
        )
        return Metadata(name="")
    return metadata


class DetectionVisualizer:
    """
    Detect objects with a RetinaNetPlugin (or any Detectron2 detector) and draw them:
    Detectron2's VisualizationDemo for box detectors.

    Attributes:
        predictor (RetinaPredictor or TiledPredictor): runs the model on one BGR image;
            tile by tile when cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0.
        metadata (Metadata): class names and colors of the labels.
    """

    def __init__(self, cfg, instance_mode: ColorMode = ColorMode.IMAGE, class_thresholds=None):
        """
        Args:
            cfg (CfgNode): the model's config; `MODEL.WEIGHTS` is loaded.
            instance_mode (ColorMode): how `Visualizer` colors instances.
            class_thresholds (list[float] or None): a minimum score per class (e.g. the
                F1-optimal ones of tools/analyze_results.py); None keeps every detection.
        """
        self.class_thresholds = None if class_thresholds is None else torch.tensor(class_thresholds)
        self.metadata = dataset_metadata(cfg)
        self.instance_mode = instance_mode
        self.cpu_device = torch.device("cpu")
        self.predictor = TiledPredictor(cfg) if cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0 else RetinaPredictor(cfg)

    def run_on_image(self, image: np.ndarray) -> Tuple[dict, VisImage]:
        """
        Args:
            image (np.ndarray): an image of shape (H, W, C) in BGR order (as OpenCV reads it).

        Returns:
            predictions (dict): the model's output for the image, {"instances": Instances}.
            vis_output (VisImage): the image (same size) with the detections drawn.
        """
        predictions = self._kept(self.predictor(image))
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        instances = predictions["instances"].to(self.cpu_device)
        vis_output = visualizer.draw_instance_predictions(predictions=instances)
        return predictions, vis_output

    def _kept(self, predictions: dict) -> dict:
        """The detections scoring at least their class's threshold (all of them without thresholds)."""
        if self.class_thresholds is None:
            return predictions
        instances = predictions["instances"].to(self.cpu_device)
        keep = instances.scores >= self.class_thresholds[instances.pred_classes]
        return {**predictions, "instances": instances[keep]}

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """
        Detect and draw objects in every frame of a video; a `VideoVisualizer` keeps the
        colors of objects consistent from frame to frame.

        Args:
            video (cv2.VideoCapture): an opened video; it is read to its end.

        Yields:
            np.ndarray: each annotated frame, in BGR order and of the input frame's size.
        """
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)
        for frame in _frames(video):
            instances = self._kept(self.predictor(frame))["instances"].to(self.cpu_device)
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            vis_frame = video_visualizer.draw_instance_predictions(rgb, instances)
            yield cv2.cvtColor(vis_frame.get_image(), cv2.COLOR_RGB2BGR)


def _frames(video: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Yield the BGR frames of an opened video until it ends."""
    while video.isOpened():
        success, frame = video.read()
        if not success:
            break
        yield frame


def _images_in_directory(directory: str) -> List[str]:
    """The image files (by IMAGE_EXTENSIONS) directly inside `directory`, sorted by name."""
    names = sorted(os.listdir(directory))
    paths = [os.path.join(directory, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise DemoInputError(f"Input directory has no images ({', '.join(IMAGE_EXTENSIONS)}): {directory}")
    return paths


def resolve_image_inputs(inputs: Sequence[str]) -> List[str]:
    """
    Expand the demo's `--input` values into a list of image files.

    Args:
        inputs: image paths, glob patterns (e.g. "images/*.jpg") and directories (all the
            images directly inside them); "~" is expanded.

    Returns:
        list[str]: the image files, in the given order (globs and directories sorted).

    Raises:
        DemoInputError: naming a path that does not exist, a glob that matches no file, or a
            directory without images.
    """
    paths = []
    for entry in inputs:
        path = os.path.expanduser(entry)
        if os.path.isdir(path):
            paths.extend(_images_in_directory(path))
        elif os.path.isfile(path):
            paths.append(path)
        elif glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not matches:
                raise DemoInputError(f"Input pattern matches no file: {entry}")
            paths.extend(matches)
        else:
            raise DemoInputError(f"Input file not found: {entry}")
    if not paths:
        raise DemoInputError("No input images given")
    return paths


def read_bgr_image(path: str) -> np.ndarray:
    """
    Read an image file as an (H, W, 3) uint8 BGR array, applying its EXIF orientation.

    Raises:
        DemoInputError: naming the file if it cannot be opened or is not an image.
    """
    try:
        return read_image(path, format="BGR")
    except (OSError, ValueError) as e:
        raise DemoInputError(f"Cannot read image {path}: {e}") from e


def _is_directory_target(output: str) -> bool:
    """Whether an `--output` value names a directory: an existing one, or one without a file ending."""
    return os.path.isdir(output) or output.endswith(("/", os.sep)) or not os.path.splitext(output)[1]


def image_output_paths(inputs: Sequence[str], output: str) -> List[str]:
    """
    Where to write the annotated version of each input image.

    Args:
        inputs: the input image files.
        output: a directory (existing, or a path without a file ending, created here), which
            receives each image under its own file name; or, with exactly one input, a file name.

    Returns:
        list[str]: one output file per input.

    Raises:
        DemoInputError: for a file name with several inputs, or two inputs of the same file name.
    """
    if not _is_directory_target(output):
        if len(inputs) != 1:
            raise DemoInputError(
                f"--output must be a directory when there are {len(inputs)} inputs: {output}"
            )
        _check_not_overwriting(inputs[0], output)
        _make_parent_directory(output)
        return [output]
    os.makedirs(output, exist_ok=True)
    outputs = [os.path.join(output, os.path.basename(p)) for p in inputs]
    seen = {}
    for src, dst in zip(inputs, outputs):
        if dst in seen:
            raise DemoInputError(f"Inputs {seen[dst]} and {src} would both be written to {dst}")
        _check_not_overwriting(src, dst)
        seen[dst] = src
    return outputs


def _check_not_overwriting(src: str, dst: str) -> None:
    """Raise DemoInputError if writing `dst` would replace the input file `src`."""
    if os.path.realpath(src) == os.path.realpath(dst):
        raise DemoInputError(f"Output would overwrite its input {src}; choose another --output")


def _make_parent_directory(path: str) -> None:
    """Create the directory that will hold file `path`, if it has one."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


def open_video(path: str) -> cv2.VideoCapture:
    """
    Open a video file for reading.

    Raises:
        DemoInputError: naming the file if it does not exist or OpenCV cannot decode it.
    """
    if not os.path.isfile(path):
        raise DemoInputError(f"Video file not found: {path}")
    video = cv2.VideoCapture(path)
    width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not video.isOpened() or width <= 0 or height <= 0:
        video.release()
        raise DemoInputError(f"Cannot decode video {path}")
    return video


def video_output_path(video_input: str, output: str) -> str:
    """
    The annotated video's file: `output` itself if it is a file name, else the input's file
    name with VIDEO_EXTENSION inside directory `output` (created here).

    Raises:
        DemoInputError: if that file is the input video itself.
    """
    if _is_directory_target(output):
        os.makedirs(output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(video_input))[0]
        path = os.path.join(output, stem + VIDEO_EXTENSION)
    else:
        _make_parent_directory(output)
        path = output
    _check_not_overwriting(video_input, path)
    return path


def open_video_writer(video: cv2.VideoCapture, path: str) -> cv2.VideoWriter:
    """
    Open an mp4v video writer at `path` with the frame size and frame rate of `video`.

    Raises:
        DemoInputError: naming the file if OpenCV cannot write it.
    """
    width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS)
    if not fps or fps != fps or fps <= 0:
        logger.warning(f"Input video reports no frame rate; writing {path} at 30 fps.")
        fps = 30.0
    writer = cv2.VideoWriter(
        path, cv2.VideoWriter_fourcc(*VIDEO_FOURCC), float(fps), (width, height), isColor=True
    )
    if not writer.isOpened():
        raise DemoInputError(f"Cannot write video {path} ({VIDEO_FOURCC}, {width}x{height}, {fps} fps)")
    return writer
