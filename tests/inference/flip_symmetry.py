"""
A RetinaNetPlugin whose detections on a horizontally flipped image are its detections on the
image, flipped (`symmetric_model`, of horizontal or rotated boxes), and its config with the flip
TTA (`symmetric_cfg`): with the flip only, test-time augmentation must give its plain result
(test_tta.py, test_rotated_tta.py).
"""
import torch
import torch.nn.functional as F
from torch import nn
from detectron2.modeling import Backbone

from retina_plugin import load_config
from retina_plugin.modeling.box_transform import box_dim
from retina_plugin.modeling.meta_arch import RetinaNetPlugin
from tool_runs import BASE_CONFIG, SMALL_MODEL_OPTS

HEIGHT, WIDTH = 256, 384  # multiples of the largest stride (128): no padding, nothing off-centre


class PoolBackbone(Backbone):
    """
    Level f of stride s: average pooling over s x s cells, a 1x1 conv, ReLU. On a width that is a
    multiple of s, pooling maps the cells of a flipped image to the flipped cells and a 1x1 conv
    has no left or right, so every level of a flipped image is the flipped level.
    """

    def __init__(self, shapes):
        super().__init__()
        self.shapes = shapes
        self.convs = nn.ModuleDict({name: nn.Conv2d(3, s.channels, 1) for name, s in shapes.items()})

    def forward(self, x):
        return {name: F.relu(conv(F.avg_pool2d(x, self.shapes[name].stride))) for name, conv in self.convs.items()}

    def output_shape(self):
        return self.shapes


def symmetric_model(cfg):
    """
    A RetinaNetPlugin whose detections on a horizontally flipped image are its detections on the
    image, flipped. A ResNet cannot be made so by its weights: a stride-2 conv or pool on an even
    width samples the even columns, which a flip makes odd. So:

    - the backbone is `PoolBackbone` (flip-equivariant, see there), with the FPN's level names,
      strides and channels, so the plugin's own head, anchors and postprocessor are built for it;
    - every 3x3 conv of the head gets weights symmetric in the width axis, w = (w + w.flip(-1)) / 2,
      which makes it flip-equivariant (its zero padding is the same on both sides): the logits
      of a flipped image are the flipped logits, and so are the dy, dw, dh deltas;
    - the dx rows of the box conv are antisymmetric instead, w = (w - w.flip(-1)) / 2, bias 0,
      so dx changes sign under a flip, as a box's horizontal offset does; for rotated boxes
      (anchors at angle 0, 5 deltas) the da rows too, since a flip negates a box's angle;
    - anchors at cell centres (MODEL.ANCHOR_GENERATOR.OFFSET 0.5), which a flip maps onto each
      other (at the default offset 0 they sit on cell corners, and a flip moves them by a stride);
    - the last two convs scaled x10, so that the scores spread (~0.23-0.26, all distinct) instead
      of all sitting at the prior.
    """
    torch.manual_seed(0)
    kwargs = RetinaNetPlugin.from_config(cfg)
    shapes = {f: s for f, s in kwargs["backbone"].output_shape().items() if f in cfg.MODEL.RETINANET.IN_FEATURES}
    kwargs["backbone"] = PoolBackbone(shapes)
    model = RetinaNetPlugin(**kwargs).eval()
    deltas = box_dim(cfg)
    with torch.no_grad():
        for conv in model.head.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
        box = model.head.bbox_pred
        assert box.weight.shape[0] == 9 * deltas  # 9 anchors a location
        odd = torch.isin(torch.arange(box.weight.shape[0]) % deltas, torch.tensor([0, 4]))  # dx, and da of XYWHA
        box.weight[odd] = torch.randn_like(box.weight[odd]) * 0.01
        box.weight[odd] = (box.weight[odd] - box.weight[odd].flip(-1)) / 2
        box.bias[odd] = 0
        for conv in (model.head.cls_score, box):
            conv.weight.mul_(10)
    return model


def symmetric_cfg(merge: str, *opts):
    """SMALL_MODEL_OPTS, `opts`, then the flip TTA at the image's own size, merged by `merge`."""
    return load_config(
        BASE_CONFIG,
        SMALL_MODEL_OPTS + list(opts) + [
            "MODEL.ANCHOR_GENERATOR.OFFSET", 0.5, "MODEL.RETINANET.PRIOR_PROB", 0.1,
            "TEST.AUG.ENABLED", True, "TEST.AUG.MIN_SIZES", (HEIGHT,), "TEST.AUG.MAX_SIZE", 1000, "TEST.AUG.FLIP", True,
            "MODEL.RETINA_PLUGIN.TTA_MERGE", merge,
        ],
    )  # fmt: skip
