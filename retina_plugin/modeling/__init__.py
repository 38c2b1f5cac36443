"""
The model of the paper, one concept a file: backbone (ResNet-FPN, P3-P7), anchor generator,
anchor matching, focal loss, head (classification and box subnets), postprocess (decode + NMS)
and the meta-architecture; and the parts that run torchvision's RetinaNets as they were
trained (torchvision_anchors, torchvision_head, torchvision_postprocess). Importing it
registers them in Detectron2's registries (and the plugin's head and postprocess registries). Of retina_plugin it imports only the rotated IoU and NMS of retina_plugin.ops (the layer below).
"""
from .anchor_generator import RetinaAnchorGenerator, anchor_tensors
from .backbone import build_retina_plugin_resnet_fpn_backbone, fold_frozen_batchnorm
from .focal_loss import sigmoid_focal_loss, sigmoid_focal_loss_from_labels
from .head import RETINA_HEAD_REGISTRY, FocalLossHead, build_retina_head
from .matching import label_anchors, sanitize_boxes
from .meta_arch import RetinaNetPlugin
from .postprocess import RETINA_POSTPROCESS_REGISTRY, DecodeAndNMS, build_retina_postprocess
from .torchvision_anchors import TorchvisionAnchorGenerator
from .torchvision_head import TorchvisionFocalLossHead
from .torchvision_postprocess import TorchvisionDecodeAndNMS

__all__ = [
    "RetinaAnchorGenerator",
    "anchor_tensors",
    "build_retina_plugin_resnet_fpn_backbone",
    "fold_frozen_batchnorm",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_from_labels",
    "RETINA_HEAD_REGISTRY",
    "FocalLossHead",
    "build_retina_head",
    "label_anchors",
    "sanitize_boxes",
    "RetinaNetPlugin",
    "RETINA_POSTPROCESS_REGISTRY",
    "DecodeAndNMS",
    "build_retina_postprocess",
    "TorchvisionAnchorGenerator",
    "TorchvisionFocalLossHead",
    "TorchvisionDecodeAndNMS",
]
