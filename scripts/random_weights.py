"""
Random weights for a torchvision RetinaNet (v1 or v2) that give detections: scores spread around
the threshold, neither saturated nor all below it. It imports only torch, so that both the peer
venv's scripts/deepforest_peer.py (which has no retina_plugin) and the tests (by path) use it.
"""
import torch
from torch import nn


def spread_random_weights(model: nn.Module, statistics_images, logit_images) -> None:
    """
    Give a freshly built (training mode) torchvision RetinaNet weights that behave like trained ones:
    BN statistics measured on `statistics_images` (as training leaves them), BN / GroupNorm affine
    random; class logits on `logit_images` of std 1 around biases N(-6, 1), so that about 1 % of
    (anchor, class) pairs pass 0.05 and 0.5 % pass 0.1; box deltas of std 0.2. The images are
    lists of (3, H, W) floats in [0, 1], which the model's own transform normalises and pads.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average of the batches seen
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        model.backbone.train()(model.transform(statistics_images)[0].tensors)
        model.eval()
        features = list(model.backbone(model.transform(logit_images)[0].tensors).values())
        classification, regression = model.head.classification_head, model.head.regression_head
        classification.cls_logits.bias.zero_()
        classification.cls_logits.weight /= classification(features).std()
        classification.cls_logits.bias.normal_(-6.0, 1.0)
        regression.bbox_reg.weight *= 0.2 / regression(features).std()
