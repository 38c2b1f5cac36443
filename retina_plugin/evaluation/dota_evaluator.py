"""
`DOTAEvaluator`: Detectron2's DatasetEvaluator of DOTA's mAP (dota_map.py) on a registered
dataset, for the trainer and `inference_on_dataset` beside the COCO-style RotatedCOCOEvaluator
(Detectron2's `DatasetEvaluators` runs both). Its results are under "dota", in percent:
mAP50 (VOC07 11-point, the figure DOTA's server and MMRotate report), mAP50_auc (area under
the curve) and both per class.
"""
import itertools
import logging
from collections import OrderedDict

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from tabulate import tabulate

from .box_iou import as_rotated
from .coco_matching import DetectedBoxes, GroundTruthBoxes
from .dota_map import DOTA_IOU_THRESHOLD, DOTAMeanAP, dota_map

__all__ = ["DOTAEvaluator", "dataset_ground_truth", "dota_results", "has_rotated_boxes"]


def has_rotated_boxes(dataset_name: str) -> bool:
    """Whether registered dataset `dataset_name` holds a rotated (XYWHA_ABS) box."""
    dicts = DatasetCatalog.get(dataset_name)
    return any(BoxMode(a["bbox_mode"]) == BoxMode.XYWHA_ABS for d in dicts for a in d.get("annotations", ()))


def _xywha(box, mode) -> list:
    """One box of a dataset dict as XYWHA (an axis-aligned one at angle 0)."""
    mode = BoxMode(mode)
    if mode != BoxMode.XYWHA_ABS:
        box = BoxMode.convert(BoxMode.convert(list(box), mode, BoxMode.XYWH_ABS), BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
    return [float(v) for v in box]


def dataset_ground_truth(dataset_dicts) -> tuple:
    """
    ({image_id: image index}, GroundTruthBoxes) of Detectron2 dataset dicts: XYWHA boxes, class
    = category_id (contiguous, as Detectron2's loaders give it), `crowd` = DOTA's `difficult`
    flag or COCO's `iscrowd` (both are boxes that no detection has to find).
    """
    index = {d["image_id"]: i for i, d in enumerate(dataset_dicts)}
    anns = [(index[d["image_id"]], a) for d in dataset_dicts for a in d.get("annotations", [])]
    return index, GroundTruthBoxes(
        image=np.array([i for i, _ in anns], np.int64),
        label=np.array([a["category_id"] for _, a in anns], np.int64),
        boxes=np.array([_xywha(a["bbox"], a["bbox_mode"]) for _, a in anns], np.float64).reshape(-1, 5),
        crowd=np.array([bool(a.get("difficult", 0)) or bool(a.get("iscrowd", 0)) for _, a in anns], bool),
    )  # fmt: skip


def dota_results(result: DOTAMeanAP, class_names) -> "OrderedDict[str, float]":
    """The "dota" results dict: mAP50, mAP50_auc, then AP50-<class> and AP50_auc-<class>, in percent (NaN: no ground truth)."""
    out = OrderedDict(mAP50=100 * result.map_voc07, mAP50_auc=100 * result.map_auc)
    out.update((f"AP50-{name}", 100 * float(ap)) for name, ap in zip(class_names, result.ap_voc07))
    out.update((f"AP50_auc-{name}", 100 * float(ap)) for name, ap in zip(class_names, result.ap_auc))
    return out


class DOTAEvaluator(DatasetEvaluator):
    """
    DOTA's mAP at IoU 0.5 of a model's rotated detections (`pred_boxes`: RotatedBoxes (N, 5);
    Boxes (N, 4) XYXY are taken at angle 0) against dataset `dataset_name`'s ground truth.
    All detections count (the devkit has no cap per image). It gathers from all ranks.
    """

    def __init__(self, dataset_name: str, distributed: bool = True, iou_threshold: float = DOTA_IOU_THRESHOLD):
        self._dataset_name = dataset_name
        self._class_names = MetadataCatalog.get(dataset_name).thing_classes
        self._distributed = distributed
        self._iou_threshold = float(iou_threshold)
        self._logger = logging.getLogger(__name__)
        self.reset()

    def reset(self):
        self._predictions = []  # (image_id, boxes (N, 5) XYWHA, scores (N,), classes (N,))

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            instances = output["instances"].to("cpu")
            boxes = instances.pred_boxes.tensor.double().numpy()
            if boxes.shape[1] == 4:
                boxes = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
            self._predictions.append((input["image_id"], as_rotated(boxes), instances.scores.double().numpy(),
                                      instances.pred_classes.numpy()))  # fmt: skip

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        index, gt = dataset_ground_truth(DatasetCatalog.get(self._dataset_name))
        dets = DetectedBoxes(
            image=np.concatenate([np.full(len(p[2]), index[p[0]], np.int64) for p in predictions] + [np.zeros(0, np.int64)]),
            label=np.concatenate([p[3] for p in predictions] + [np.zeros(0, np.int64)]).astype(np.int64),
            boxes=np.concatenate([p[1] for p in predictions] + [np.zeros((0, 5))]),
            scores=np.concatenate([p[2] for p in predictions] + [np.zeros(0)]),
        )  # fmt: skip
        result = dota_map(gt, dets, len(self._class_names), self._iou_threshold)
        results = dota_results(result, self._class_names)
        self._log(result, results)
        return OrderedDict(dota=results)

    def _log(self, result: DOTAMeanAP, results) -> None:
        self._logger.info(
            f"DOTA mAP at IoU {self._iou_threshold:g} (rotated IoU; difficult boxes ignored; in %):\n"
            + create_small_table({k: results[k] for k in ("mAP50", "mAP50_auc")})
        )
        rows = [(name, int(result.num_gt[k]), int(result.num_det[k]), 100 * result.ap_voc07[k], 100 * result.ap_auc[k])
                for k, name in enumerate(self._class_names)]  # fmt: skip
        table = tabulate(rows, headers=["category", "#gt", "#det", "AP50 (11-point)", "AP50 (area)"], floatfmt=".3f",
                         tablefmt="pipe", numalign="left")  # fmt: skip
        self._logger.info("Per-category DOTA AP50:\n" + table)
