"""
The network of a RetinaNetPlugin exported to ONNX without its postprocess (`--format
onnx-network`): the graph the runtimes benchmark cuts from the whole detector at the head's
outputs, exported directly, with the anchors. Score threshold, top-k, decoding, NMS and rescaling
then run outside the graph, by the model's own postprocessor (`build_retina_postprocess(cfg)`,
DecodeAndNMS), for horizontal and rotated models.

    image (C, H, W) float32, as for the whole-model export
    -> logits_<level> (1, Hi*Wi*A, K) per level, then deltas_<level> (1, Hi*Wi*A, B), then
       anchors_<level> (Hi*Wi*A, B); B = 4 (XYXY) or 5 (XYWHA, rotated)
"""
from typing import List, Sequence, Tuple

import torch
from torch import nn
from detectron2.structures import Instances

from ..modeling.anchor_generator import anchor_tensors

__all__ = ["NetworkOutputs", "network_output_names", "export_network_onnx", "network_detections"]


class NetworkOutputs(nn.Module):
    """A RetinaNetPlugin up to its head: normalization, padding, backbone, head, and the anchors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """image (C, H, W) -> per level logits (1, Hi*Wi*A, K), then deltas (1, Hi*Wi*A, B), then anchors (Hi*Wi*A, B)."""
        model = self.model
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        logits, deltas = model.head(features)
        return (*logits, *deltas, *anchor_tensors(model.anchor_generator, features))


def network_output_names(levels: Sequence[str]) -> List[str]:
    """The ONNX output names for the head's input levels, e.g. logits_p3 ... deltas_p3 ... anchors_p3 ..."""
    return [f"{kind}_{level}" for kind in ("logits", "deltas", "anchors") for level in levels]


def export_network_onnx(model: nn.Module, image: torch.Tensor, path: str, opset: int) -> None:
    """
    Trace the network of `model` on the (C, H, W) `image` and write it to `path`: input "image"
    (C, height, width), outputs `network_output_names(model.head_in_features)`, all sizes dynamic.
    """
    import onnx

    names = network_output_names(model.head_in_features)
    dynamic_axes = {"image": {1: "height", 2: "width"}}
    dynamic_axes.update({name: {0 if name.startswith("anchors") else 1: f"rows_{name.split('_', 1)[1]}"} for name in names})
    with torch.no_grad():
        torch.onnx.export(
            NetworkOutputs(model).eval(), (image,), path, dynamo=False, opset_version=opset,
            input_names=["image"], output_names=names, dynamic_axes=dynamic_axes,
        )  # fmt: skip
    onnx.checker.check_model(path)


def network_detections(postprocess, outputs: Sequence[torch.Tensor], image_size: Tuple[int, int]) -> Instances:
    """
    The detections of one image from the exported network's outputs (in their order), by the
    model's postprocessor (DecodeAndNMS), at the image's size `image_size` (h, w).
    """
    levels = len(outputs) // 3
    logits, deltas, anchors = (list(outputs[k * levels : (k + 1) * levels]) for k in range(3))
    (instances,) = postprocess(anchors, logits, deltas, [tuple(image_size)], [tuple(image_size)])
    return instances
