"""
A dataset's ground-truth boxes as the model sees them: resized as Detectron2's DatasetMapper
resizes them (ResizeShortestEdge from cfg.INPUT). Split "test" uses MIN_SIZE_TEST /
MAX_SIZE_TEST; split "train" uses the largest of MIN_SIZE_TRAIN (the largest size a box is
trained at) with MAX_SIZE_TRAIN. Random flips and crops are not modelled. Crowd and empty boxes
are dropped, as the mapper drops them.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes
from ...errors import UserError

__all__ = ["AnchorCoverageError", "ResizedBoxes", "load_resized_boxes"]


class AnchorCoverageError(UserError):
    """A dataset or config the analysis cannot use; the message names it."""


@dataclass
class ResizedBoxes:
    """A dataset's ground-truth boxes as the model sees them, after the config's resizing."""

    dataset_name: str
    split: str
    short_edge: int
    max_size: int
    file_names: List[str]
    image_sizes: List[Tuple[int, int]]  # per image the resized (height, width)
    boxes: List[torch.Tensor]  # per image (Gi, 4) float32 XYXY in resized pixels

    @property
    def num_boxes(self) -> int:
        return sum(len(b) for b in self.boxes)


def _resize_edges(cfg, split: str) -> Tuple[int, int]:
    if split == "train":
        min_sizes = cfg.INPUT.MIN_SIZE_TRAIN
        min_sizes = [min_sizes] if isinstance(min_sizes, int) else list(min_sizes)
        return int(max(min_sizes)), int(cfg.INPUT.MAX_SIZE_TRAIN)
    if split == "test":
        return int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)
    raise AnchorCoverageError(f"split {split!r} must be 'train' or 'test'")


def load_resized_boxes(cfg, dataset_name: str, split: str = "train", max_images: Optional[int] = None) -> ResizedBoxes:
    """
    The boxes of the registered dataset `dataset_name` (its first `max_images` images), resized
    as the DatasetMapper of `split` resizes them (see the module docstring).
    """
    short_edge, max_size = _resize_edges(cfg, split)
    if dataset_name not in DatasetCatalog.list():
        raise AnchorCoverageError(
            f"dataset {dataset_name!r} is not registered in Detectron2's DatasetCatalog "
            "(register it first, or pass a COCO json file)"
        )
    try:
        records = DatasetCatalog.get(dataset_name)
    except OSError as e:  # registered, but its annotation file is missing or unreadable
        raise AnchorCoverageError(f"dataset {dataset_name!r} cannot be loaded: {e}") from e
    if max_images is not None:
        records = records[: max(int(max_images), 0)]
    if not records:
        raise AnchorCoverageError(f"dataset {dataset_name!r} has no images")
    file_names, image_sizes, boxes = [], [], []
    for record in records:
        if "height" in record and "width" in record:
            height, width = int(record["height"]), int(record["width"])
        else:
            height, width = d2_utils.read_image(record["file_name"]).shape[:2]
        if short_edge > 0:
            new_size = T.ResizeShortestEdge.get_output_shape(height, width, short_edge, max_size)
            transform = T.ResizeTransform(height, width, new_size[0], new_size[1])
        else:  # Detectron2's ResizeShortestEdge does not resize for a size of 0
            new_size, transform = (height, width), T.NoOpTransform()
        image_boxes = [
            d2_utils.transform_instance_annotations(
                {"bbox": obj["bbox"], "bbox_mode": obj["bbox_mode"]}, [transform], new_size
            )["bbox"]
            for obj in record.get("annotations", [])
            if obj.get("iscrowd", 0) == 0
        ]
        image_boxes = Boxes(torch.as_tensor(np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)))
        file_names.append(record.get("file_name", ""))
        image_sizes.append(tuple(new_size))
        boxes.append(image_boxes.tensor[image_boxes.nonempty(threshold=1e-5)])
    resized = ResizedBoxes(dataset_name, split, short_edge, max_size, file_names, image_sizes, boxes)
    if resized.num_boxes == 0:
        raise AnchorCoverageError(f"dataset {dataset_name!r} has no (non-crowd, non-empty) boxes")
    return resized
