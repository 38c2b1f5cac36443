"""
Detectron2's RotatedCOCOEvaluator (COCO's AP of XYWHA boxes; the dataset's COCO json holds
5-number boxes) running the rotated COCOeval of `cocoeval.cocoeval_class(rotated=True)`:
faster-coco-eval's C++ matching on the rotated IoU of retina_plugin.ops (not Detectron2's
compiled op), else pycocotools'. Its results dict, tables, printed summary and
coco_instances_results.json (5-number "bbox") are Detectron2's.
"""
from detectron2.evaluation import RotatedCOCOEvaluator as _D2RotatedCOCOEvaluator

from .coco_evaluator import evaluate_coco_boxes
from .cocoeval import cocoeval_class, cocoeval_name

__all__ = ["RotatedCOCOEvaluator"]


class RotatedCOCOEvaluator(_D2RotatedCOCOEvaluator):
    """
    Detectron2's RotatedCOCOEvaluator whose `use_fast_impl` (default True) is faster-coco-eval's
    compiled COCOeval (pycocotools' when it is not installed), as `FastCOCOEvaluator`'s;
    `max_dets_per_image` (e.g. tiled evaluation's cap of a whole image) is honoured as
    COCOEvaluator honours it, AP reported at it.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, use_fast_impl=True,
                 max_dets_per_image=None, allow_cached_coco=True):  # fmt: skip
        # Detectron2's fast COCOeval is for axis-aligned boxes; the choice is cocoeval.py's.
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=False,
                         max_dets_per_image=max_dets_per_image, allow_cached_coco=allow_cached_coco)  # fmt: skip
        self._use_fast_impl = bool(use_fast_impl)

    def _evaluate_predictions_on_coco(self, coco_gt, coco_results):
        """COCO results dicts (XYWHA or XYWH "bbox") evaluated against `coco_gt`, summarized (printed); the COCOeval."""
        cocoeval = cocoeval_class(self._use_fast_impl, self._max_dets_per_image[2], rotated=True)
        self._logger.info(f"Evaluating rotated boxes with {cocoeval_name(cocoeval)} COCOeval ...")
        max_dets = self._max_dets_per_image
        return evaluate_coco_boxes(coco_gt, coco_results, max_dets, None, self._use_fast_impl, rotated=True)
