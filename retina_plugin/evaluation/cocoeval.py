"""
The one place that picks the COCOeval every COCO evaluation of the package runs (the trainer's
and LazyConfig's `FastCOCOEvaluator`, analyze_results and its TIDE reruns, evaluate_raster,
tiled evaluation, the API): faster-coco-eval's, pycocotools' COCOeval with evaluate() and
accumulate() in C++, when it imports; else pycocotools' own, with one log line saying so.

On the same inputs both give the same stats, precision / recall / scores arrays and matches
(tests/evaluation/test_cocoeval.py); at 10^6 boxes the compiled one is many times faster
(benchmarks/coco_eval.py, docs/speed.md). The summary is pycocotools' in both, so the 12 stats
and the printed table are its own.
"""
import functools
import logging
from importlib.metadata import version

from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from pycocotools.cocoeval import COCOeval

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


def cocoeval_class(use_fast_impl: bool = True, max_dets: int = COCO_MAX_DETS) -> type:
    """
    The COCOeval class to run: faster-coco-eval's when `use_fast_impl` and it imports, else
    pycocotools' (logged once when `use_fast_impl` asked for the compiled one). `max_dets`: the
    detections per image its summary reports AP at (Detectron2's COCOevalMaxDets when not 100).
    """
    custom = int(max_dets) != COCO_MAX_DETS
    if use_fast_impl and compiled_available():
        return CompiledCOCOevalMaxDets if custom else CompiledCOCOeval
    if use_fast_impl:
        _log_fallback()
    return COCOevalMaxDets if custom else COCOeval


def is_compiled(cls: type) -> bool:
    """True for faster-coco-eval's COCOeval classes (their matches are not in `evalImgs`)."""
    return compiled_available() and issubclass(cls, COCOeval_faster)


def cocoeval_name(cls: type) -> str:
    """Which implementation `cls` (from `cocoeval_class`) runs, with its version, for logs and reports."""
    if is_compiled(cls):
        return f"faster-coco-eval {_compiled_version}"
    return f"pycocotools {version('pycocotools')}"
