"""
Image and video files as the demo, the Python API and the tools take them: command-line paths
(files, globs, folders) turned into images, output file names beside them, and video readers and
writers; anything missing or unreadable raises `InputFileError` naming the path.
"""
import glob
import logging
import os
from typing import List, Sequence

import cv2
import numpy as np
from detectron2.data.detection_utils import read_image

from ..errors import InputFileError

__all__ = [
    "IMAGE_EXTENSIONS",
    "InputFileError",
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


def _images_in_directory(directory: str) -> List[str]:
    """The image files (by IMAGE_EXTENSIONS) directly inside `directory`, sorted by name."""
    names = sorted(os.listdir(directory))
    paths = [os.path.join(directory, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise InputFileError(f"Input directory has no images ({', '.join(IMAGE_EXTENSIONS)}): {directory}")
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
        InputFileError: naming a path that does not exist, a glob that matches no file, or a
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
                raise InputFileError(f"Input pattern matches no file: {entry}")
            paths.extend(matches)
        else:
            raise InputFileError(f"Input file not found: {entry}")
    if not paths:
        raise InputFileError("No input images given")
    return paths


def read_bgr_image(path: str) -> np.ndarray:
    """
    Read an image file as an (H, W, 3) uint8 BGR array, applying its EXIF orientation.

    Raises:
        InputFileError: naming the file if it cannot be opened or is not an image.
    """
    try:
        return read_image(path, format="BGR")
    except (OSError, ValueError) as e:
        raise InputFileError(f"Cannot read image {path}: {e}") from e


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
        InputFileError: for a file name with several inputs, or two inputs of the same file name.
    """
    if not _is_directory_target(output):
        if len(inputs) != 1:
            raise InputFileError(
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
            raise InputFileError(f"Inputs {seen[dst]} and {src} would both be written to {dst}")
        _check_not_overwriting(src, dst)
        seen[dst] = src
    return outputs


def _check_not_overwriting(src: str, dst: str) -> None:
    """Raise InputFileError if writing `dst` would replace the input file `src`."""
    if os.path.realpath(src) == os.path.realpath(dst):
        raise InputFileError(f"Output would overwrite its input {src}; choose another --output")


def _make_parent_directory(path: str) -> None:
    """Create the directory that will hold file `path`, if it has one."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


def open_video(path: str) -> cv2.VideoCapture:
    """
    Open a video file for reading.

    Raises:
        InputFileError: naming the file if it does not exist or OpenCV cannot decode it.
    """
    if not os.path.isfile(path):
        raise InputFileError(f"Video file not found: {path}")
    video = cv2.VideoCapture(path)
    width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not video.isOpened() or width <= 0 or height <= 0:
        video.release()
        raise InputFileError(f"Cannot decode video {path}")
    return video


def video_output_path(video_input: str, output: str) -> str:
    """
    The annotated video's file: `output` itself if it is a file name, else the input's file
    name with VIDEO_EXTENSION inside directory `output` (created here).

    Raises:
        InputFileError: if that file is the input video itself.
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
        InputFileError: naming the file if OpenCV cannot write it.
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
        raise InputFileError(f"Cannot write video {path} ({VIDEO_FOURCC}, {width}x{height}, {fps} fps)")
    return writer
