"""
Test-time augmentation (TTA) for RetinaNetPlugin, in the place of Detectron2's
`GeneralizedRCNNWithTTA`, which accepts only R-CNN models.

Each image is seen in the versions Detectron2's `DatasetMapperTTA` makes from `cfg.TEST.AUG`:
resized so that its short side is each of MIN_SIZES (the long side at most MAX_SIZE), and each
of those flipped horizontally too when FLIP. Of every version the model's *raw candidates* are
taken (per level the scores above MODEL.RETINANET.SCORE_THRESH_TEST, the best
TOPK_CANDIDATES_TEST, decoded; before any NMS: `DecodeAndNMS.candidates_single_image`), their
boxes mapped back to the original image with the inverse of the transforms the mapper recorded,
and the candidates of all versions merged at once by MODEL.RETINA_PLUGIN.TTA_MERGE:

- "nms": class-wise NMS at MODEL.RETINANET.NMS_THRESH_TEST (Detectron2's `batched_nms`);
- "wbf": weighted box fusion (`weighted_box_fusion`): each box that NMS keeps is the seed of a
  cluster, whose fused box is the score-weighted mean of its members and whose score is the
  mean over the versions of each version's best member score.

then the best TEST.DETECTIONS_PER_IMAGE, clipped to the image.

A model of rotated boxes (XYWHA, MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator) maps its
candidates back with Detectron2's `apply_rotated_box` of each transform (flip: x mirrored and the
angle negated; resize: its own approximation, exact for the uniform scale of a shortest-edge
resize) and merges them by rotated NMS (`retina_plugin.ops.batched_nms_rotated`). "wbf" is refused
for it: a score-weighted mean of angles is not a box of the cluster where angles wrap at ±180°. `RetinaNetWithTTA` takes and
returns Detectron2's model inputs and outputs, so `inference_on_dataset` (the trainer's `test`,
results under OUTPUT_DIR/inference_TTA/), `RetinaPredictor` (the demo's --tta) and
`TiledInference` (TTA on every tile) use it as they use the model.
"""
import logging
from contextlib import contextmanager
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from detectron2.config import configurable
from detectron2.data.detection_utils import read_image
from detectron2.layers import batched_nms
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from detectron2.structures import Boxes, Instances, RotatedBoxes, pairwise_iou

from ..config import VALID_TTA_MERGES, ConfigError, check_tta_config
from ..ops import batched_nms_rotated

__all__ = ["RetinaNetWithTTA", "check_tta_config", "map_boxes_back", "weighted_box_fusion"]

logger = logging.getLogger(__name__)

Candidates = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (R, 4) or (R, 5), scores (R,), classes (R,)


def box_structure(boxes: torch.Tensor):
    """Boxes for (R, 4) XYXY, RotatedBoxes for (R, 5) XYWHA."""
    return RotatedBoxes(boxes) if boxes.shape[-1] == 5 else Boxes(boxes)


def map_boxes_back(boxes: torch.Tensor, transforms) -> torch.Tensor:
    """
    Boxes (R, 4) XYXY or (R, 5) XYWHA of an augmented version -> the original image, with the
    inverse of its `transforms` (`apply_box`, or `apply_rotated_box` for rotated boxes).
    """
    dim = boxes.shape[-1]
    # apply_rotated_box edits its array in place: give it a copy, never the tensor's memory.
    array = np.array(boxes.detach().cpu().numpy(), dtype=np.float64 if dim == 5 else None)
    inverse = transforms.inverse()
    mapped = inverse.apply_rotated_box(array) if dim == 5 else inverse.apply_box(array)
    return torch.as_tensor(np.ascontiguousarray(mapped), dtype=boxes.dtype).reshape(-1, dim).to(boxes.device)


def weighted_box_fusion(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    versions: torch.Tensor,
    num_versions: int,
    iou_thresh: float,
    max_detections: int,
) -> Candidates:
    """
    Weighted box fusion of the candidates of `num_versions` versions of one image, class by class.

    The boxes that class-wise NMS at `iou_thresh` keeps, by decreasing score, seed the clusters;
    every box joins the cluster of the highest-scoring seed of its class with IoU >= `iou_thresh`
    (the seed that suppressed it in the NMS). A cluster's fused box is the score-weighted mean of
    its members' boxes; its score the mean over the versions of each version's best member score
    (0 for a version without one), so a box found by one version in four keeps a quarter of its score.

    Args:
        boxes (R, 4), scores (R,), classes (R,): the candidates, in one image's coordinates.
        versions (R,): the version (0 .. num_versions - 1) each candidate comes from.
    Returns:
        the `max_detections` best fused boxes, scores and classes, by decreasing score.
    """
    if len(boxes) == 0:
        return boxes, scores, classes
    seeds = batched_nms(boxes, scores, classes, iou_thresh)
    # Fused score <= seed score, and >= seed score / num_versions: seeds below the bound that
    # the max_detections-th seed guarantees cannot reach the output.
    if len(seeds) > max_detections:
        bound = scores[seeds[max_detections - 1]] / num_versions
        seeds = seeds[scores[seeds] >= bound]
    # Shift each class to its own region, so boxes of different classes never overlap.
    span = (boxes.max() - boxes.min()).item() + 1
    shifted = boxes + (classes.to(boxes) * span)[:, None]
    cluster = torch.full((len(boxes),), -1, dtype=torch.int64, device=boxes.device)
    seed_boxes = Boxes(shifted[seeds])
    for first in range(0, len(boxes), 4096):  # bounded memory: (4096, seeds) IoUs at a time
        member = pairwise_iou(Boxes(shifted[first : first + 4096]), seed_boxes) >= iou_thresh
        found = member.any(1)
        # the first seed (the highest-scoring one) each box overlaps enough
        cluster[first : first + 4096] = torch.where(found, member.int().argmax(1), -1)
    cluster[seeds] = torch.arange(len(seeds), device=boxes.device)
    keep = cluster >= 0
    cluster, boxes, scores, versions = cluster[keep], boxes[keep], scores[keep], versions[keep]

    num = len(seeds)
    weight_sum = scores.new_zeros(num).index_add_(0, cluster, scores)
    fused_boxes = boxes.new_zeros(num, 4).index_add_(0, cluster, boxes * scores[:, None]) / weight_sum[:, None]
    best = scores.new_zeros(num * num_versions).scatter_reduce_(0, cluster * num_versions + versions, scores, "amax")
    fused_scores = best.view(num, num_versions).mean(1)
    order = fused_scores.argsort(descending=True, stable=True)[:max_detections]
    return fused_boxes[order], fused_scores[order], classes[seeds][order]


class _RawCandidates:
    """Stands in for the model's postprocessor: per image its raw candidates, at the network input's size."""

    def __init__(self, postprocess):
        self.postprocess = postprocess

    def __call__(self, anchors, pred_logits, pred_anchor_deltas, image_sizes, output_sizes) -> List[Instances]:
        results = []
        for i, image_size in enumerate(image_sizes):
            boxes, scores, classes = self.postprocess.candidates_single_image(
                anchors, [x[i] for x in pred_logits], [x[i] for x in pred_anchor_deltas]
            )
            results.append(Instances(image_size, pred_boxes=box_structure(boxes), scores=scores, pred_classes=classes))
        return results


class RetinaNetWithTTA(nn.Module):
    """
    A RetinaNetPlugin with test-time augmentation (see the module's docstring). Its forward has
    the model's inference interface: per image a dict with "image" (C, H, W) (or "file_name")
    and optional "height", "width" (the size to report boxes in; by default the image's), and
    it returns per image {"instances": Instances} with pred_boxes, scores, pred_classes.

    The model runs as it does alone (its precision, int8, channels-last), with its postprocessor
    replaced during the call by one that returns the raw candidates. Versions of one size run as
    one batch (an image and its flip), versions of different sizes one after the other, so no
    version is padded beyond what it would be alone.
    """

    @configurable
    def __init__(self, model: nn.Module, *, tta_mapper, merge: str = "nms", nms_thresh: float = 0.5, detections_per_image: int = 100):
        """
        Args:
            model: a RetinaNetPlugin (or a DistributedDataParallel of one) whose postprocessor has
                `candidates_single_image` (DecodeAndNMS).
            tta_mapper: makes the versions of an input dict, e.g. Detectron2's `DatasetMapperTTA`.
            merge: how the versions' candidates are merged, one of VALID_TTA_MERGES.
            nms_thresh: IoU threshold of the merge (MODEL.RETINANET.NMS_THRESH_TEST).
            detections_per_image: the most detections kept per image (TEST.DETECTIONS_PER_IMAGE).
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not hasattr(getattr(model, "postprocess", None), "candidates_single_image"):
            raise TypeError(
                f"test-time augmentation needs a RetinaNetPlugin whose postprocessor gives its raw candidates "
                f"(candidates_single_image, as DecodeAndNMS does); got {type(model).__name__} with "
                f"postprocess {type(getattr(model, 'postprocess', None)).__name__}"
            )
        if merge not in VALID_TTA_MERGES:
            raise ValueError(f"merge {merge!r} is not one of {VALID_TTA_MERGES}")
        if merge == "wbf" and model.anchor_generator.box_dim == 5:
            raise ConfigError(
                "MODEL.RETINA_PLUGIN.TTA_MERGE wbf averages boxes, which rotated boxes (MODEL.ANCHOR_GENERATOR.NAME "
                "RotatedAnchorGenerator) cannot be: their angles wrap at ±180°; use TTA_MERGE nms"
            )
        self.model = model
        # inference_on_dataset puts a model in eval mode and back in the mode it found: start in
        # the wrapped model's mode, not a new Module's (training).
        self.train(model.training)
        self.tta_mapper = tta_mapper
        self.merge = merge
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image

    @classmethod
    def from_config(cls, cfg, model, tta_mapper=None):
        # cfg reads TEST.AUG.*, MODEL.RETINA_PLUGIN.TTA_MERGE, MODEL.RETINANET.NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE
        check_tta_config(cfg)
        return {
            "model": model,
            "tta_mapper": tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg),
            "merge": cfg.MODEL.RETINA_PLUGIN.TTA_MERGE,
            "nms_thresh": cfg.MODEL.RETINANET.NMS_THRESH_TEST,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self):
        return self.model.device

    def describe(self) -> str:
        """One line saying which versions are made and how they are merged."""
        mapper = self.tta_mapper
        sizes = getattr(mapper, "min_sizes", None)
        if sizes is None:
            return f"test-time augmentation with {type(mapper).__name__}, merged by {self.merge}"
        flip = getattr(mapper, "flip", False)
        return (
            f"test-time augmentation: {len(sizes) * (2 if flip else 1)} versions per image (short side "
            f"{tuple(sizes)}, long side <= {mapper.max_size}{', each also flipped' if flip else ''}), merged by {self.merge}"
        )

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [{"instances": self.detect(self._with_image(x))} for x in batched_inputs]

    def _with_image(self, x: Dict) -> Dict:
        image = x["image"] if "image" in x else self._read(x["file_name"])
        # DatasetMapperTTA resizes and flips with numpy, on the CPU.
        return {"image": image.cpu(), "height": x.get("height", image.shape[1]), "width": x.get("width", image.shape[2])}

    def _read(self, file_name: str) -> torch.Tensor:
        image = read_image(file_name, self.model.input_format)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def versions(self, x: Dict) -> Tuple[List[Dict], List]:
        """The augmented versions of input `x` ("image", "height", "width") and the transforms of each."""
        versions = self.tta_mapper(x)
        return versions, [v.pop("transforms") for v in versions]

    @contextmanager
    def _raw_candidates(self):
        postprocess = self.model.postprocess
        self.model.postprocess = _RawCandidates(postprocess)
        try:
            yield
        finally:
            self.model.postprocess = postprocess

    def candidates(self, versions: List[Dict], transforms: List) -> List[Candidates]:
        """Per version its raw candidates, the boxes mapped back to the original image (not clipped)."""
        by_size: Dict[Tuple[int, int], List[int]] = {}
        for i, v in enumerate(versions):
            by_size.setdefault(tuple(v["image"].shape[-2:]), []).append(i)
        raw: List[Instances] = [None] * len(versions)
        with self._raw_candidates():
            for indices in by_size.values():
                outputs = self.model([{"image": versions[i]["image"]} for i in indices])
                for i, output in zip(indices, outputs):
                    raw[i] = output["instances"]
        return [
            (map_boxes_back(r.pred_boxes.tensor, t), r.scores, r.pred_classes) for r, t in zip(raw, transforms)
        ]

    def merge_candidates(self, candidates: List[Candidates], image_size: Tuple[int, int]) -> Instances:
        """All versions' candidates merged by NMS or WBF, the best DETECTIONS_PER_IMAGE, clipped to `image_size`."""
        boxes = torch.cat([c[0] for c in candidates])
        scores = torch.cat([c[1] for c in candidates])
        classes = torch.cat([c[2] for c in candidates])
        if self.merge == "wbf":
            versions = torch.cat([torch.full_like(c[2], i) for i, c in enumerate(candidates)])
            boxes, scores, classes = weighted_box_fusion(
                boxes, scores, classes, versions, len(candidates), self.nms_thresh, self.detections_per_image
            )
        else:
            nms = batched_nms_rotated if boxes.shape[-1] == 5 else batched_nms
            keep = nms(boxes, scores, classes, self.nms_thresh)[: self.detections_per_image]
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        merged = Instances(image_size, pred_boxes=box_structure(boxes), scores=scores, pred_classes=classes)
        return detector_postprocess(merged, *image_size)  # clips, drops empty boxes (as the model does)

    def detect(self, x: Dict) -> Instances:
        """Input dict with "image" (C, H, W) on the CPU, "height", "width" -> its merged detections."""
        versions, transforms = self.versions(x)
        return self.merge_candidates(self.candidates(versions, transforms), (x["height"], x["width"]))
