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

A rotated model (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator) exports to TorchScript the
same way: its rotated NMS (`retina_plugin.ops.batched_nms_rotated`) is TorchScript, so the traced
graph keeps it as a call that runs on any image. It has no ONNX form (it iterates to a fixed point
with ops ONNX lacks), so `--format onnx` is refused for a rotated model, and `--format
onnx-network` exports the network without its postprocess instead (`network_export`).

ONNX uses PyTorch's TorchScript-based exporter (`dynamo=False`, opset 17), for which
`import torchvision.ops` registers `torchvision::nms` as ONNX `NonMaxSuppression`. The
`torch.export`-based exporter (`dynamo=True`) stops on data-dependent shapes: the anchor
cache hashes the symbolic feature sizes, and torchvision's `batched_nms` branches on the
number of boxes.
"""
import contextlib
import logging
import os
from typing import Optional, Tuple

import torch
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.export import TracingAdapter

from ..compare import compare_detections
from ..errors import UserError
from ..inference.model import load_model
from ..modeling.box_transform import is_rotated
from ..modeling.meta_arch import RetinaNetPlugin
from .network_export import export_network_onnx, network_detections

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_METHODS",
    "ONNX_OPSET",
    "ExportError",
    "build_model_for_export",
    "sample_image",
    "channel_description",
    "eager_detections",
    "export_torchscript",
    "export_onnx",
    "check_export_request",
    "check_export_format",
    "export_model",
    "run_exported",
    "LOAD_INSTRUCTIONS",
    "check_exported",
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


def sample_image(cfg, path: Optional[str] = None, seed: int = 0) -> torch.Tensor:
    """
    The model input an export is traced and checked on.

    Args:
        path: an image file, read in cfg.INPUT.FORMAT and resized as `DefaultPredictor`
            resizes; it must have the model's channel count. None generates an image of the
            test size (shortest edge MIN_SIZE_TEST, 512 when that is 0, 4:3 up to
            MAX_SIZE_TEST): a few rectangles of random colour, with noise over the whole image.
        seed: seeds the generated image.
    Returns:
        (C, H, W) float32, C = len(cfg.MODEL.PIXEL_MEAN), pixel values 0..255.
    Raises:
        ExportError: the file is missing, unreadable or has another number of channels.
    """
    channels = len(cfg.MODEL.PIXEL_MEAN)
    if path is not None:
        if not os.path.isfile(path):
            raise ExportError(f"sample image not found: {path}")
        try:
            image = read_image(path, format=cfg.INPUT.FORMAT)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot read sample image {path}: {e}") from e
        resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        image = resize.get_transform(image).apply_image(image)
        if image.shape[2] != channels:
            raise ExportError(
                f"sample image {path} reads as {image.shape[2]} channel(s) in INPUT.FORMAT {cfg.INPUT.FORMAT}, the "
                f"model takes {channels} (len(MODEL.PIXEL_MEAN)); omit --sample-image to trace on a generated image"
            )
        return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))

    height = cfg.INPUT.MIN_SIZE_TEST or 512
    width = min(cfg.INPUT.MAX_SIZE_TEST, height * 4 // 3) if cfg.INPUT.MAX_SIZE_TEST else height * 4 // 3
    g = torch.Generator().manual_seed(seed)
    # Noise everywhere, also on the rectangles: no two locations see identical features, so
    # no two candidates tie in score and NMS keeps the same boxes in every runtime.
    image = torch.rand(channels, height, width, generator=g) * 64 + 96
    for _ in range(4):
        h, w = (torch.randint(s // 8, s // 3 + 1, (1,), generator=g).item() for s in (height, width))
        y, x = (torch.randint(0, s - d, (1,), generator=g).item() for s, d in ((height, h), (width, w)))
        colour = torch.rand(channels, 1, 1, generator=g) * 160
        image[:, y : y + h, x : x + w] = colour + torch.rand(channels, h, w, generator=g) * 32
    return image


def channel_description(cfg) -> str:
    """The model's input channels in words: "BGR", "BGR + 1 further band", "1 band"."""
    channels = len(cfg.MODEL.PIXEL_MEAN)
    if channels == 3:
        return cfg.INPUT.FORMAT
    if channels > 3:
        return f"{cfg.INPUT.FORMAT} + {channels - 3} further band{'s' if channels > 4 else ''}"
    return f"{channels} band{'s' if channels > 1 else ''}"


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


def check_export_format(cfg, format: str) -> None:
    """
    Raises:
        ExportError: format "onnx" for a model of rotated boxes, whose rotated NMS has no ONNX form.
    """
    if format == "onnx" and is_rotated(cfg):
        raise ExportError(
            "format onnx: the model predicts rotated boxes (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator), whose "
            "rotated NMS has no ONNX form; use --format onnx-network (the network in ONNX, its postprocess run "
            "outside by build_retina_postprocess(cfg)) or --format torchscript (the whole model)"
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


def run_exported(path: str, image: torch.Tensor, postprocess=None) -> Detections:
    """
    Run an exported "model.ts" (TorchScript) or "model.onnx" (onnxruntime, CPU) on a (C, H, W)
    image; a "network.onnx" (format onnx-network) with `postprocess` (the model's DecodeAndNMS)
    applied to its outputs.
    """
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        network = os.path.basename(path) == FILE_NAMES["onnx-network"]
        outputs = session.run(None if network else list(OUTPUT_NAMES), {"image": image.cpu().numpy()})
        outputs = [torch.from_numpy(x) for x in outputs]
        if network:
            if postprocess is None:
                raise ValueError(f"{path} holds the network only: pass the model's postprocess to run it")
            instances = network_detections(postprocess, outputs, tuple(image.shape[1:]))
            return instances.pred_boxes.tensor, instances.scores, instances.pred_classes
        return tuple(outputs)
    import torchvision  # noqa: F401  (registers torchvision::nms, which the traced graph calls)

    module = torch.jit.load(path)
    with torch.no_grad():
        return tuple(x.cpu() for x in module(image))


LOAD_INSTRUCTIONS = {
    "torchscript": """\
    import torch, torchvision  # torchvision registers torchvision::nms, which the graph calls
    model = torch.jit.load("{path}")
    boxes, scores, classes = model(image)  # image: ({channels}, H, W) float32 {fmt}, 0..255""",
    "onnx": """\
    import onnxruntime
    session = onnxruntime.InferenceSession("{path}", providers=["CPUExecutionProvider"])
    boxes, scores, classes = session.run(None, {{"image": image}})  # ({channels}, H, W) float32 {fmt} numpy""",
    "onnx-network": """\
    import onnxruntime, torch
    from retina_plugin import load_config
    from retina_plugin.deploy.network_export import network_detections
    from retina_plugin.modeling import build_retina_postprocess
    session = onnxruntime.InferenceSession("{path}", providers=["CPUExecutionProvider"])
    outputs = [torch.from_numpy(x) for x in session.run(None, {{"image": image}})]  # ({channels}, H, W) float32 {fmt} numpy
    postprocess = build_retina_postprocess(load_config("{config}", OPTS))  # OPTS: the export's --opts
    detections = network_detections(postprocess, outputs, image.shape[1:])  # Instances""",
}


def check_exported(path: str, model: RetinaNetPlugin, image: torch.Tensor) -> Tuple[bool, str]:
    """
    Whether the exported file at `path` gives the eager model's detections on `image`, compared as
    sets (`retina_plugin.compare.compare_detections`: class, IoU >= 0.99, score within 1e-4; near
    tied scores may swap places or decide the last one kept), and a line saying so.
    """
    exported = run_exported(path, image, model.postprocess)
    result = compare_detections(exported, eager_detections(model, image), min_iou=0.99, score_atol=1e-4)
    diff = "n/a" if result["max_score_diff"] is None else f"{result['max_score_diff']:.3g}"
    iou = "n/a" if result["min_iou"] is None else f"{result['min_iou']:.6f}"
    line = (
        f"check ({os.path.splitext(path)[1][1:]} vs eager, {tuple(image.shape)} image): detections "
        f"{result['count'][0]} vs {result['count'][1]}, {result['matched']} matched (min IoU {iou}, "
        f"max |score diff| {diff}), {result['ties']} near-tied, {result['unmatched']} unmatched: "
        f"{'OK' if result['match'] else 'MISMATCH'}"
    )
    return result["match"], line
