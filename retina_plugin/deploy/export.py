"""
Export a RetinaNetPlugin to TorchScript or ONNX, the way Detectron2's
`tools/deploy/export_model.py` exports its models: Detectron2's `TracingAdapter` flattens the
model's list-of-dicts input and `Instances` output, and `torch.jit.trace` records the graph.

The exported model takes one image and returns its postprocessed detections:

    image (C, H, W) float32, C = len(cfg.MODEL.PIXEL_MEAN) channels (the RGB ones in
        cfg.INPUT.FORMAT order, further bands after them), pixel values 0..255, already resized
        as `DefaultPredictor` does (shortest edge MIN_SIZE_TEST, longest <= MAX_SIZE_TEST)
    -> boxes (R, 4) float32 XYXY in the input image's pixels (a rotated model: (R, 5) XYWHA,
       cx, cy, w, h, angle in degrees counter-clockwise), scores (R,) float32, classes (R,)
       int64, sorted by score; R <= DETECTIONS_PER_IMAGE.

Normalization, padding, anchors, score threshold, per-level top-k, decoding, class-wise NMS
and clipping are inside the exported graph. H and W are not fixed at export: padding and
anchors are computed from the traced input shape, and the per-level top-k count and NMS are
graph ops, so the export runs correctly on images of other contents and sizes.

Only tracing is supported. Scripting (`torch.jit.script`, Detectron2's
`scripting_with_instances`) would need the model's Python to be TorchScript: the anchor
cache keyed by feature-map sizes, the postprocessor (a plain callable, not an nn.Module), the
training-only code (`get_event_storage`, fvcore losses) and the autocast switch all are not.

A rotated model (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator) exports the same way: its
rotated NMS (`retina_plugin.ops.batched_nms_rotated`) is TorchScript, so the traced graph keeps it
as a call that runs on any image; exported to ONNX, the call is the same NMS in ONNX's ops
(`retina_plugin.ops.rotated_nms_onnx`: its fixed point an ONNX Loop). `--format onnx-network`
exports the network without its postprocess (`network_export`).

ONNX uses PyTorch's TorchScript-based exporter (`dynamo=False`, opset 17), for which
`import torchvision.ops` registers `torchvision::nms` as ONNX `NonMaxSuppression`. The
`torch.export`-based exporter (`dynamo=True`) stops on data-dependent shapes: the anchor
cache hashes the symbolic feature sizes, and torchvision's `batched_nms` branches on the
number of boxes.
"""
import contextlib
import logging
import os
from typing import Tuple

import torch
from detectron2.export import TracingAdapter

from ..errors import UserError
from ..inference.model import load_model
from ..modeling.meta_arch import RetinaNetPlugin
from .network_export import export_network_onnx

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_METHODS",
    "ONNX_OPSET",
    "ExportError",
    "build_model_for_export",
    "eager_detections",
    "export_torchscript",
    "export_onnx",
    "check_export_request",
    "export_model",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("torchscript", "onnx", "onnx-network")
EXPORT_METHODS = ("tracing", "scripting")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx", "onnx-network": "network.onnx"}
# NonMaxSuppression and TopK with a tensor k need opset 11 (Detectron2's stable opset);
# 17 is the opset the exports are tested with in onnxruntime.
ONNX_OPSET = 17
OUTPUT_NAMES = ("boxes", "scores", "classes")

Detections = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ExportError(UserError):
    """The model cannot be exported as asked; the message names the setting or file to change."""


def build_model_for_export(cfg) -> RetinaNetPlugin:
    """
    Build the model of `cfg` in eval mode and load `cfg.MODEL.WEIGHTS` ("" keeps the random
    initialization).

    Raises:
        ExportError: the meta-architecture is not RetinaNetPlugin, INFERENCE_DTYPE is not
            float32, or the weights file does not exist.
    """
    if cfg.MODEL.META_ARCHITECTURE != "RetinaNetPlugin":
        raise ExportError(
            f"MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}; this export is for RetinaNetPlugin"
        )
    if cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE != "float32":
        # Tracing would record autocast's casts into the graph, and 16-bit scores often tie, so
        # the exported NMS can order tied boxes unlike the eager one: only float32 is exported.
        raise ExportError(
            f"MODEL.RETINA_PLUGIN.INFERENCE_DTYPE is {cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE!r}; export "
            "supports float32 only: set MODEL.RETINA_PLUGIN.INFERENCE_DTYPE float32"
        )
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise ExportError(f"MODEL.WEIGHTS file not found: {weights}")
    if not weights:
        logger.warning("MODEL.WEIGHTS is empty: exporting randomly initialized weights")
    return load_model(cfg)


def _detections(model: RetinaNetPlugin, inputs) -> Detections:
    instances = model(inputs)[0]["instances"]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def eager_detections(model: RetinaNetPlugin, image: torch.Tensor) -> Detections:
    """The eager model's boxes (R, 4), scores (R,), classes (R,) for a (C, H, W) image."""
    with torch.no_grad():
        return tuple(x.cpu() for x in _detections(model, [{"image": image}]))


@contextlib.contextmanager
def _anchors_in_graph(model: RetinaNetPlugin):
    # The anchor generator caches anchors per feature-map size. While tracing the sizes are
    # tensors: an empty cache makes the anchors graph ops of the input shape (so the export
    # takes any size), and the traced tensors stay out of the eager model's cache.
    # Detectron2's own generators (RotatedAnchorGenerator) keep no cache.
    generator = model.anchor_generator
    if not hasattr(generator, "_cache"):
        yield
        return
    cache, generator._cache = generator._cache, {}
    try:
        yield
    finally:
        generator._cache = cache


def _tracing_adapter(model: RetinaNetPlugin, image: torch.Tensor) -> TracingAdapter:
    # A new nn.Module is in training mode; exporters restore that mode to the whole tree.
    return TracingAdapter(model, [{"image": image}], _detections).eval()


def export_torchscript(model: RetinaNetPlugin, image: torch.Tensor, path: str) -> torch.jit.ScriptModule:
    """
    Trace `model` on the (C, H, W) `image` and save the TorchScript module to `path`.
    The module maps an image (C, H, W) to (boxes, scores, classes); loading it needs
    `import torchvision` first (for torchvision::nms).
    """
    adapter = _tracing_adapter(model, image)
    with _anchors_in_graph(model), torch.no_grad():
        # Outputs are compared explicitly (`compare_detections`), not by the tracer's check.
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
    torch.jit.save(traced, path)
    return traced


def export_onnx(model: RetinaNetPlugin, image: torch.Tensor, path: str, opset: int = ONNX_OPSET) -> None:
    """
    Trace `model` on the (C, H, W) `image` and write an ONNX model to `path` with input
    "image" (C, height, width) and outputs "boxes" (R, 4), "scores" (R,), "classes" (R,);
    height, width and R are dynamic axes.
    """
    import onnx

    adapter = _tracing_adapter(model, image)
    dynamic_axes = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUT_NAMES}}
    with _anchors_in_graph(model), torch.no_grad():
        torch.onnx.export(
            adapter,
            (image,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
        )
    onnx.checker.check_model(path)


def check_export_request(format: str, method: str) -> None:
    """
    Raises:
        ExportError: an unknown format or method, or scripting (not supported; see the module doc).
    """
    if format not in EXPORT_FORMATS:
        raise ExportError(f"format {format!r} is not one of {EXPORT_FORMATS}")
    if method not in EXPORT_METHODS:
        raise ExportError(f"export method {method!r} is not one of {EXPORT_METHODS}")
    if method == "scripting":
        raise ExportError(
            f"export method 'scripting' (format {format}) is not supported for RetinaNetPlugin: its anchor "
            "cache, postprocessor and training code are not TorchScript. Use the export method 'tracing', "
            "whose graph keeps the input size, the top-k counts and NMS dynamic"
        )


def export_model(
    model: RetinaNetPlugin, image: torch.Tensor, output_dir: str, format: str, method: str = "tracing"
) -> str:
    """
    Export `model` traced on the (C, H, W) `image` into `output_dir` as "model.ts"
    (format "torchscript"), "model.onnx" (format "onnx") or "network.onnx" (format
    "onnx-network": the network and anchors, without the postprocess; `network_export`).

    Returns:
        the path of the written file.
    Raises:
        ExportError: see `check_export_request`.
    """
    check_export_request(format, method)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILE_NAMES[format])
    if format == "torchscript":
        export_torchscript(model, image, path)
    elif format == "onnx":
        export_onnx(model, image, path)
    else:
        with _anchors_in_graph(model):
            export_network_onnx(model, image, path, ONNX_OPSET)
    return path
