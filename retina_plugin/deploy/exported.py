"""
An exported file at work: run it (TorchScript, or ONNX in onnxruntime), compare its detections
with the eager model's (`check_exported`, what `tools/export_model.py --check` prints), and the
lines that load it in a user's code (`LOAD_INSTRUCTIONS`).
"""
import importlib
import os
from typing import Tuple

import torch

from ..compare import compare_detections
from ..modeling.meta_arch import RetinaNetPlugin
from .export import FILE_NAMES, OUTPUT_NAMES, Detections, eager_detections
from .network_export import network_detections

__all__ = ["run_exported", "check_exported", "LOAD_INSTRUCTIONS"]


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
    importlib.import_module("torchvision")  # registers torchvision::nms, which the traced graph calls

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
