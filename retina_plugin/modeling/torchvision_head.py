"""The head of torchvision's RetinaNet v2: the subnets' convolutions before a norm have no bias."""
from torch import nn
from detectron2.config import configurable

from .head import RETINA_HEAD_REGISTRY, FocalLossHead


@RETINA_HEAD_REGISTRY.register()
class TorchvisionFocalLossHead(FocalLossHead):
    """
    FocalLossHead (same keys, state_dict names, forward and losses) whose subnet convolutions
    have no bias when MODEL.RETINANET.NORM puts a norm after them, as torchvision's
    `Conv2dNormActivation` builds them: the GroupNorm head of `retinanet_resnet50_fpn_v2`.
    Loading zeros into FocalLossHead's biases would give the same outputs, but fine-tuning
    would then learn biases that GroupNorm does not cancel (it normalises groups of channels,
    not each channel), and the weights could no longer go back to torchvision. Without a norm
    it is FocalLossHead.
    """

    @configurable
    def __init__(self, *, norm: str = "", **kwargs):
        super().__init__(norm=norm, **kwargs)
        if norm:
            for subnet in (self.cls_subnet, self.bbox_subnet):
                for layer in subnet:
                    if isinstance(layer, nn.Conv2d):
                        layer.register_parameter("bias", None)
