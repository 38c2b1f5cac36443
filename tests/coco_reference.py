"""pycocotools' COCOeval run as a user runs it: the reference the package's own COCO evaluations are checked against."""
import contextlib
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def reference_cocoeval(gt_dict, results, max_dets=(1, 10, 100)):
    """COCOeval (bbox) of a ground-truth COCO dict and COCO results dicts (loadRes), summarized."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_dict
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev
