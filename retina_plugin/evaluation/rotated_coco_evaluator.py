"""
Detectron2's RotatedCOCOEvaluator (COCO's AP of XYWHA boxes; the dataset's COCO json holds
5-number boxes) running `RotatedCOCOeval` (rotated_cocoeval.py: the IoU from retina_plugin.ops,
not Detectron2's compiled op). Its results dict, tables, printed summary and
coco_instances_results.json (5-number "bbox") are Detectron2's.
"""
from detectron2.evaluation import RotatedCOCOEvaluator as _D2RotatedCOCOEvaluator

from .rotated_cocoeval import rotated_cocoeval_class

__all__ = ["RotatedCOCOEvaluator"]


class RotatedCOCOEvaluator(_D2RotatedCOCOEvaluator):
    """
    Detectron2's RotatedCOCOEvaluator on `RotatedCOCOeval`; `max_dets_per_image` (e.g. tiled
    evaluation's cap of a whole image) is honoured as COCOEvaluator honours it, AP reported at it.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, max_dets_per_image=None,
                 allow_cached_coco=True):  # fmt: skip
        # Detectron2's fast COCOeval is for axis-aligned boxes: the rotated one is pycocotools' loops.
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=False,
                         max_dets_per_image=max_dets_per_image, allow_cached_coco=allow_cached_coco)  # fmt: skip

    def _evaluate_predictions_on_coco(self, coco_gt, coco_results):
        """COCO results dicts (XYWHA or XYWH "bbox") evaluated against `coco_gt`, summarized (printed); the COCOeval."""
        max_dets = list(self._max_dets_per_image)
        coco_eval = rotated_cocoeval_class(max_dets[2])(coco_gt, coco_gt.loadRes(coco_results), iouType="bbox")
        coco_eval.params.maxDets = max_dets
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        return coco_eval
