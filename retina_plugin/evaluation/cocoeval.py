"""
The one place that picks the COCOeval every COCO evaluation of the package runs (the trainer's
and LazyConfig's `FastCOCOEvaluator`, the `RotatedCOCOEvaluator`, analyze_results and its TIDE
reruns, evaluate_raster, tiled evaluation, the API): faster-coco-eval's, pycocotools' COCOeval
with evaluate() and accumulate() in C++, when it imports; else pycocotools' own, with one log
line saying so. For rotated XYWHA boxes the same two, computeIoU taking the rotated IoU
(rotated_cocoeval.py); faster-coco-eval then runs only the IoUs in Python.

On the same inputs both give the same stats, precision / recall / scores arrays and matches
(tests/evaluation/test_cocoeval.py; rotated: test_rotated_cocoeval.py); at 10^6 boxes the
compiled one is many times faster (benchmarks/coco_eval.py, docs/speed.md). The summary is pycocotools' in both, so the 12 stats
and the printed table are its own.
"""
import functools
import logging
from importlib.metadata import version

from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from pycocotools.cocoeval import COCOeval

from .rotated_cocoeval import RotatedCOCOeval, RotatedCOCOevalMaxDets, RotatedIoU

try:
    from faster_coco_eval import COCOeval_faster
    from faster_coco_eval import __version__ as _compiled_version

    _import_error = None
except ImportError as e:  # not installed, or no wheel of its C++ extension for this platform
    COCOeval_faster, _compiled_version, _import_error = None, None, e

__all__ = ["COCO_MAX_DETS", "compiled_available", "cocoeval_class", "is_compiled", "cocoeval_name"]

logger = logging.getLogger(__name__)
COCO_MAX_DETS = 100  # COCOeval.summarize's AP is at maxDets 100; Detectron2's COCOevalMaxDets at another


if COCOeval_faster is not None:

    class CompiledCOCOeval(COCOeval_faster):
        """faster-coco-eval's evaluate() and accumulate() (C++), pycocotools' summarize()."""

        summarize = COCOeval.summarize

        def __init__(self, cocoGt=None, cocoDt=None, iouType="segm", **kwargs):
            # its progress lines go to the debug log (pycocotools prints its own)
            super().__init__(cocoGt, cocoDt, iouType, print_function=logger.debug, **kwargs)

    class CompiledCOCOevalMaxDets(CompiledCOCOeval):
        """The same, summarized as Detectron2's COCOevalMaxDets (AP at maxDets[2], not 100)."""

        summarize = COCOevalMaxDets.summarize

    class CompiledRotatedCOCOeval(RotatedIoU, CompiledCOCOeval):
        """CompiledCOCOeval of XYWHA boxes: its computeIoU takes the rotated IoU (RotatedIoU)."""

    class CompiledRotatedCOCOevalMaxDets(CompiledRotatedCOCOeval):
        """The same, summarized as Detectron2's COCOevalMaxDets (AP at maxDets[2], not 100)."""

        summarize = COCOevalMaxDets.summarize


# (compiled, rotated): (the class summarizing at maxDets 100, the one at another maxDets)
_CLASSES = {(False, False): (COCOeval, COCOevalMaxDets), (False, True): (RotatedCOCOeval, RotatedCOCOevalMaxDets)}
if COCOeval_faster is not None:
    _CLASSES[True, False] = (CompiledCOCOeval, CompiledCOCOevalMaxDets)
    _CLASSES[True, True] = (CompiledRotatedCOCOeval, CompiledRotatedCOCOevalMaxDets)


def compiled_available() -> bool:
    """True when faster-coco-eval's COCOeval imports."""
    return COCOeval_faster is not None


@functools.lru_cache(maxsize=None)
def _log_fallback() -> None:
    logger.warning(
        "faster-coco-eval does not import (%s): COCO evaluation runs in pycocotools' Python loops, "
        "many times slower on large sets; `pip install faster-coco-eval` for its C++ ones",
        _import_error,
    )


def cocoeval_class(use_fast_impl: bool = True, max_dets: int = COCO_MAX_DETS, rotated: bool = False) -> type:
    """
    The COCOeval class to run: faster-coco-eval's when `use_fast_impl` and it imports, else
    pycocotools' (logged once when `use_fast_impl` asked for the compiled one). `max_dets`: the
    detections per image its summary reports AP at (Detectron2's COCOevalMaxDets when not 100).
    `rotated`: its IoU is of XYWHA boxes (XYWH ones facing them taken at angle 0).
    """
    compiled = bool(use_fast_impl) and compiled_available()
    if use_fast_impl and not compiled:
        _log_fallback()
    return _CLASSES[compiled, bool(rotated)][int(max_dets) != COCO_MAX_DETS]


def is_compiled(cls: type) -> bool:
    """True for faster-coco-eval's COCOeval classes (their matches are not in `evalImgs`)."""
    return compiled_available() and issubclass(cls, COCOeval_faster)


def cocoeval_name(cls: type) -> str:
    """Which implementation `cls` (from `cocoeval_class`) runs, with its version, for logs and reports."""
    if is_compiled(cls):
        return f"faster-coco-eval {_compiled_version}"
    return f"pycocotools {version('pycocotools')}"
