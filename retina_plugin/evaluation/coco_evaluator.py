"""
Detectron2's COCOEvaluator with faster-coco-eval as its fast implementation.

Detectron2's own fast COCOeval is in its compiled `_C`, which the wheel we install has for
Python 3.10 only; elsewhere COCOEvaluator logs "Fast COCO eval is not built. Falling back to
official COCO eval." and runs pycocotools' Python loops. `FastCOCOEvaluator` changes only which
COCOeval runs the boxes (`cocoeval.cocoeval_class`); the results dict, the tables it logs, the
summary it prints and trainer's copypaste lines are Detectron2's, from the same numbers.
"""
import itertools
import json
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from detectron2.utils.file_io import PathManager
from pycocotools.cocoeval import COCOeval

from .cocoeval import cocoeval_class, cocoeval_name

__all__ = ["FastCOCOEvaluator", "evaluate_coco_boxes"]


class FastCOCOEvaluator(COCOEvaluator):
    """
    COCOEvaluator whose `use_fast_impl` (default True) is faster-coco-eval's compiled COCOeval
    (pycocotools' when it is not installed); False runs pycocotools' as Detectron2's does.
    Tiled evaluation's maxDets beyond 100 (Detectron2's COCOevalMaxDets) goes the same way.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, use_fast_impl=True, **kwargs):
        # Detectron2 would look for its _C and log the fallback to pycocotools; the choice is cocoeval.py's.
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=False, **kwargs)
        self._use_fast_impl = bool(use_fast_impl)

    def _eval_predictions(self, predictions, img_ids=None):
        """COCOEvaluator._eval_predictions, the boxes evaluated by `evaluate_coco_boxes`."""
        self._logger.info("Preparing results for COCO format ...")
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        self._unmap_category_ids(coco_results)
        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Saving results to {}".format(file_path))
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
                f.flush()
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        for task in sorted(tasks):
            assert task in {"bbox", "segm", "keypoints"}, f"Got unknown task: {task}!"
            if not coco_results:  # cocoapi does not handle empty results well
                coco_eval = None
            elif task == "bbox":
                coco_eval = self._evaluate_boxes(coco_results, img_ids)
            else:  # masks and keypoints (no RetinaNet output): Detectron2's official path
                coco_eval = _evaluate_predictions_on_coco(
                    self._coco_api, coco_results, task, kpt_oks_sigmas=self._kpt_oks_sigmas, cocoeval_fn=COCOeval,
                    img_ids=img_ids, max_dets_per_image=self._max_dets_per_image,
                )  # fmt: skip
            class_names = self._metadata.get("thing_classes")
            self._results[task] = self._derive_coco_results(coco_eval, task, class_names=class_names)

    def _unmap_category_ids(self, coco_results) -> None:
        """The dataset's category ids in place of the contiguous ones, as COCOEvaluator does."""
        if not hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            return
        dataset_id_to_contiguous_id = self._metadata.thing_dataset_id_to_contiguous_id
        all_contiguous_ids = list(dataset_id_to_contiguous_id.values())
        num_classes = len(all_contiguous_ids)
        assert min(all_contiguous_ids) == 0 and max(all_contiguous_ids) == num_classes - 1
        reverse_id_mapping = {v: k for k, v in dataset_id_to_contiguous_id.items()}
        for result in coco_results:
            category_id = result["category_id"]
            assert category_id < num_classes, (
                f"A prediction has class={category_id}, but the dataset only has {num_classes} classes and "
                f"predicted class id should be in [0, {num_classes - 1}]."
            )
            result["category_id"] = reverse_id_mapping[category_id]

    def _evaluate_boxes(self, coco_results, img_ids):
        cocoeval = cocoeval_class(self._use_fast_impl, self._max_dets_per_image[2])
        self._logger.info(f"Evaluating predictions with {cocoeval_name(cocoeval)} COCOeval ...")
        return evaluate_coco_boxes(self._coco_api, coco_results, self._max_dets_per_image, img_ids, self._use_fast_impl)


def evaluate_coco_boxes(coco_gt, coco_results, max_dets_per_image=(1, 10, 100), img_ids=None, use_fast_impl=True,
                        rotated=False):  # fmt: skip
    """
    Detectron2's _evaluate_predictions_on_coco for "bbox" with the COCOeval of `cocoeval_class`:
    `coco_results` (COCO results dicts) loaded into pycocotools' `coco_gt`, evaluated at maxDets
    `max_dets_per_image` ([1, 10, N]), summarized (printed); returns the COCOeval. `rotated`:
    XYWHA boxes, by rotated IoU (RotatedCOCOEvaluator's).
    """
    max_dets = list(max_dets_per_image)
    cocoeval = cocoeval_class(use_fast_impl, max_dets[2], rotated=rotated)
    coco_eval = cocoeval(coco_gt, coco_gt.loadRes(coco_results), "bbox")
    coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval
