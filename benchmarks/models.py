"""
The three models, built with the same seed (adapters.py runs them):

  ours         retina_plugin's RetinaNetPlugin (configs/retinanet_R50.yaml, random weights)
  detectron2   Detectron2's built-in RetinaNet from the same config, holding the same weights
  torchvision  torchvision's RetinaNet R50-FPN (v1), random weights

Random weights are made to give realistic detections (see CLS_BIAS); `calibrated_int8` makes
an int8 copy of ours.
"""
import copy
from pathlib import Path

import torch

from inputs import (
    DETECTIONS_PER_IMAGE,
    INFER_SIZE,
    NUM_CLASSES,
    SCORE_THRESH,
    SEED,
    bgr_tensor,
    calibration_image,
    rgb_unit_tensor,
    synthetic_image,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("ours", "detectron2", "torchvision")  # the columns, in this order

# Random weights give an almost constant classifier output (bias -log(99): no detections).
# The head's last convs get new random weights scaled to the actual size of their inputs
# (measured on a small calibration image), so that logits ~ N(CLS_BIAS, CLS_LOGIT_STD^2) vary
# with the image and thousands of scores per image pass 0.05: the postprocessor (threshold,
# top-k, NMS) does realistic work. Box deltas get std BOX_DELTA_STD.
CLS_BIAS = -6.0
CLS_LOGIT_STD = 1.0
BOX_DELTA_STD = 0.2


def detectron2_cfgs(device):
    """
    (reference cfg, ours cfg): one config (configs/retinanet_R50.yaml, random weights) read by
    Detectron2's RetinaNet with its own backbone and anchor generator, and by RetinaNetPlugin.
    """
    from retina_plugin import load_config

    ours = load_config(str(ROOT / "configs" / "retinanet_R50.yaml"), [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", device,
        "MODEL.RETINANET.NUM_CLASSES", NUM_CLASSES["detectron2"],
        "TEST.DETECTIONS_PER_IMAGE", DETECTIONS_PER_IMAGE,
    ])
    ref = ours.clone()
    ref.MODEL.META_ARCHITECTURE = "RetinaNet"
    ref.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    ref.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    return ref, ours


def perturb_head(cls_score, bbox_pred, cls_input, box_input, seed):
    """
    New random weights for the classifier and box convs of the head (see CLS_BIAS), given
    their input features (lists of per-level tensors) on a calibration image.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv, inputs, std in ((cls_score, cls_input, CLS_LOGIT_STD), (bbox_pred, box_input, BOX_DELTA_STD)):
            rms = torch.cat([x.flatten() for x in inputs]).pow(2).mean().sqrt().item()
            scale = std / (rms * conv.weight[0].numel() ** 0.5)
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * scale)
            conv.bias.zero_()
        cls_score.bias.fill_(CLS_BIAS)

def build_detectron2(device):
    from detectron2.modeling import build_model

    ref_cfg, _ = detectron2_cfgs(device)
    torch.manual_seed(SEED)
    model = build_model(ref_cfg).eval()
    image = calibration_image()
    with torch.no_grad():
        images = model.preprocess_image([{"image": bgr_tensor(image, device)}])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        cls_input = [model.head.cls_subnet(x) for x in features]
        box_input = [model.head.bbox_subnet(x) for x in features]
    perturb_head(model.head.cls_score, model.head.bbox_pred, cls_input, box_input, SEED)
    return model


def ours_config(device, opts=()):
    """Ours' config: the benchmark's (detectron2_cfgs) with config keys `opts` (a list as on the command line) on top."""
    from retina_plugin.config import merge_options

    _, ours_cfg = detectron2_cfgs(device)
    merge_options(ours_cfg, opts)
    return ours_cfg


def build_ours(device, state_dict=None, opts=()):
    """
    RetinaNetPlugin holding the (perturbed) weights of `build_detectron2` (or `state_dict`, its),
    with the config of `ours_config(device, opts)`.
    """
    import retina_plugin  # noqa: F401  (registers the plugin)
    from detectron2.modeling import build_model

    ours_cfg = ours_config(device, opts)
    if state_dict is None:
        state_dict = build_detectron2(device).state_dict()
    torch.manual_seed(SEED + 1)
    model = build_model(ours_cfg)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def build_torchvision(device):
    """
    torchvision's retinanet_resnet50_fpn (v1) with random weights, assembled as that builder
    does when given a pretrained backbone: FrozenBatchNorm and stem + layer1 frozen, like
    Detectron2's FREEZE_AT 2 (with weights_backbone=None it would use trainable BatchNorm and
    train every layer). The transform leaves 800x1216 (eval) and 640x853 (train) unresized.
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(SEED)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=None,
        norm_layer=FrozenBatchNorm2d,
        trainable_layers=3,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    model = RetinaNet(
        backbone,
        num_classes=NUM_CLASSES["torchvision"],
        min_size=min(INFER_SIZE),
        max_size=1333,
        score_thresh=SCORE_THRESH,
        detections_per_img=DETECTIONS_PER_IMAGE,
    )
    model = model.to(device).eval()
    head = model.head
    with torch.no_grad():
        images, _ = model.transform([rgb_unit_tensor(calibration_image(), device)])
        features = list(model.backbone(images.tensors).values())
        cls_input = [head.classification_head.conv(x) for x in features]
        box_input = [head.regression_head.conv(x) for x in features]
    perturb_head(head.classification_head.cls_logits, head.regression_head.bbox_reg, cls_input, box_input, SEED)
    return model


def calibrated_int8(model, height, width, seeds, device="cpu"):
    """An int8 copy of ours (`model`, eval mode), calibrated on synthetic images of that size."""
    from retina_plugin.inference.int8 import calibrate_int8, quantize_int8

    calibration = [[{"image": bgr_tensor(synthetic_image(height, width, seed=s)[0], device)}] for s in seeds]
    return quantize_int8(copy.deepcopy(model), calibrate_int8(model, calibration))
