"""
`RetinaDatasetMapper`: Detectron2's `DatasetMapper` for images as users have them.

- Grayscale, palette, RGBA, CMYK, 16-bit and 32-bit images become 8-bit images in the
  model's `INPUT.FORMAT` (`read_image`).
- A missing or unreadable image raises `ImageReadError` naming the file and the dataset; with
  `DATALOADER.SKIP_UNREADABLE_IMAGES` the training loader logs it, counts it and goes on.
"""
import copy
import logging
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager

__all__ = ["ImageReadError", "RetinaDatasetMapper", "read_image"]

logger = logging.getLogger(__name__)

# PIL modes holding more than 8 bits per pixel, and the largest value of each.
_HIGH_BIT_DEPTH_MAX = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


class ImageReadError(OSError):
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


class RetinaDatasetMapper(DatasetMapper):
    """
    Detectron2's DatasetMapper (augmentations, annotations -> Instances, empty boxes removed)
    reading images with `read_image` above and failing with the file's and the dataset's name.

    Returns None for an unreadable image when `skip_unreadable` is set; the training loader
    then takes the next sample.
    """

    @configurable
    def __init__(self, is_train: bool, *, dataset_name: str = "", skip_unreadable: bool = False, **kwargs):
        super().__init__(is_train, **kwargs)
        self.dataset_name = dataset_name
        self.skip_unreadable = skip_unreadable
        self.num_skipped = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: str = ""):
        ret = super().from_config(cfg, is_train)
        ret["dataset_name"] = dataset_name
        ret["skip_unreadable"] = is_train and cfg.DATALOADER.SKIP_UNREADABLE_IMAGES
        return ret

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        dataset = dataset_dict.get("dataset_name", self.dataset_name) or "(unnamed)"
        try:
            image = read_image(file_name, format=self.image_format)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            # PIL raises SyntaxError for some broken PNG/TIFF headers.
            message = f"dataset {dataset!r}: cannot read image {file_name}: {e}"
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
            dataset_dict["instances"] = utils.annotations_to_instances([], image.shape[:2])
        return dataset_dict
