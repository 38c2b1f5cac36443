"""
`RetinaDatasetMapper`: Detectron2's `DatasetMapper` for images as users have them.

- Grayscale, palette, RGBA, CMYK, 16-bit and 32-bit images become 8-bit images in the
  model's `INPUT.FORMAT` (`read_image`).
- A dict with "raster_window" (a tile of a raster dataset, `retina_plugin.geo.dataset`) is
  that window of the raster, read with `retina_plugin.data.raster.RasterSource` in the model's
  channel order (`read_raster_window`); each loader process opens a raster once.
- A missing or unreadable image raises `ImageReadError` naming the file and the dataset; with
  `DATALOADER.SKIP_UNREADABLE_IMAGES` the training loader logs it, counts it and goes on.
- For a rotated model (`modeling.box_transform.is_rotated`) the boxes stay rotated: the
  augmentations move them as XYWHA (`rotated_transforms`) and they become `RotatedBoxes` by
  Detectron2's `annotations_to_instances_rotated`. A horizontal model given rotated boxes trains on
  their enclosing boxes (Detectron2's `transform_instance_annotations` converts them).
"""
import copy
import logging
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager

from ..errors import UserError
from ..modeling.box_transform import is_rotated
from .rotated_transforms import transform_rotated_annotation

__all__ = ["ImageReadError", "RetinaDatasetMapper", "read_image", "read_raster_window"]

logger = logging.getLogger(__name__)

# PIL modes holding more than 8 bits per pixel, and the largest value of each.
_HIGH_BIT_DEPTH_MAX = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


class ImageReadError(UserError, OSError):
    """An image of a dataset is missing or cannot be decoded; the message names file and dataset."""


def read_image(file_name: str, format: str) -> np.ndarray:
    """
    Read an image file as an 8-bit (H, W, C) array in `format` ("BGR", "RGB" or a PIL mode),
    applying its EXIF orientation like Detectron2's `read_image`.

    16- and 32-bit integer images are scaled linearly from 0..65535 to 0..255 (values above
    65535 saturate), floating-point images are clipped to 0..255; the alpha channel of RGBA /
    LA images is dropped; one-channel images are repeated to three channels for "BGR"/"RGB".
    """
    with PathManager.open(file_name, "rb") as f:
        image = Image.open(f)
        image.load()
    image = utils._apply_exif_orientation(image)
    if image.mode in _HIGH_BIT_DEPTH_MAX:
        array = np.asarray(image, dtype=np.float64) * (255.0 / _HIGH_BIT_DEPTH_MAX[image.mode])
        image = Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    return utils.convert_PIL_to_numpy(image, format)


def read_raster_window(source, window: Tuple[int, int, int, int]) -> np.ndarray:
    """
    The window (x0, y0, x1, y1) of an open `RasterSource` as an (H, W, C) array, channels in
    the source's (the model's) order: uint8 for a 1- or 3-band uint8 raster, else float32.

    Detectron2's resize goes through PIL for uint8 images, which takes 2 and 4 channels as
    luminance / colour with alpha (it premultiplies by the last channel, changing the others)
    and fails on more; its float path (torch's interpolate) resizes any number of channels alike.
    """
    data = source.read(*window)
    if data is None:
        raise ValueError("every pixel of the window is nodata")
    image = data.transpose(1, 2, 0)
    if image.dtype == np.uint8 and image.shape[2] in (1, 3):
        return np.ascontiguousarray(image)
    return image.astype(np.float32)


class RetinaDatasetMapper(DatasetMapper):
    """
    Detectron2's DatasetMapper (augmentations, annotations -> Instances, empty boxes removed)
    reading images with `read_image` above and failing with the file's and the dataset's name.

    Returns None for an unreadable image when `skip_unreadable` is set; the training loader
    then takes the next sample. With `rotated`, "instances" holds `gt_boxes` as (N, 5)
    `RotatedBoxes`.
    """

    @configurable
    def __init__(self, is_train: bool, *, dataset_name: str = "", skip_unreadable: bool = False, rotated: bool = False, **kwargs):
        super().__init__(is_train, **kwargs)
        self.dataset_name = dataset_name
        self.skip_unreadable = skip_unreadable
        self.rotated = rotated
        self.num_skipped = 0
        self._rasters = {}  # (process id, path, bands) -> open RasterSource

    def __getstate__(self):
        # Open rasters stay in the process that opened them.
        state = self.__dict__.copy()
        state["_rasters"] = {}
        return state

    def _raster(self, path: str, bands: Sequence[int]):
        # Opening a GeoTIFF per sample made reading a 256 px window ~5x slower (29 vs 5 ms);
        # keyed by process id, as a GDAL handle must not cross a fork into loader workers.
        key = (os.getpid(), path, tuple(bands))
        if key not in self._rasters:
            from .raster import RasterSource  # the geo extra is needed only for raster datasets

            self._rasters[key] = RasterSource(path, bands, self.image_format, len(bands))
        return self._rasters[key]

    def _read(self, dataset_dict: dict) -> np.ndarray:
        if "raster_window" in dataset_dict:
            source = self._raster(dataset_dict["file_name"], dataset_dict["raster_bands"])
            return read_raster_window(source, dataset_dict["raster_window"])
        return read_image(dataset_dict["file_name"], format=self.image_format)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: str = ""):
        ret = super().from_config(cfg, is_train)
        ret["dataset_name"] = dataset_name
        ret["skip_unreadable"] = is_train and cfg.DATALOADER.SKIP_UNREADABLE_IMAGES
        ret["rotated"] = is_rotated(cfg)
        return ret

    def _transform_annotations(self, dataset_dict: dict, transforms, image_shape: Tuple[int, int]):
        if not self.rotated:
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        annotations = [
            transform_rotated_annotation(a, transforms) for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances_rotated(annotations, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        dataset = dataset_dict.get("dataset_name", self.dataset_name) or "(unnamed)"
        try:
            image = self._read(dataset_dict)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            # PIL raises SyntaxError for some broken PNG/TIFF headers; rasterio's read errors are OSErrors.
            what = f"window {tuple(dataset_dict['raster_window'])} of raster" if "raster_window" in dataset_dict else "image"
            message = f"dataset {dataset!r}: cannot read {what} {file_name}: {e}"
            if not self.skip_unreadable:
                raise ImageReadError(message + " (set DATALOADER.SKIP_UNREADABLE_IMAGES True to skip such images in training)") from None
            self.num_skipped += 1
            logger.warning(f"{message}; skipped ({self.num_skipped} skipped so far in this loader process)")
            return None
        try:
            utils.check_image_size(dataset_dict, image)
        except utils.SizeMismatchError as e:
            raise utils.SizeMismatchError(f"dataset {dataset!r}: {e}") from None

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        else:  # an image without annotations trains as background
            to_instances = utils.annotations_to_instances_rotated if self.rotated else utils.annotations_to_instances
            dataset_dict["instances"] = to_instances([], image.shape[:2])
        return dataset_dict
