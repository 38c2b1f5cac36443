"""
torchvision RetinaNets with random weights for the conversion tests (nothing downloaded), whose
scores spread around the 0.05 threshold, the images they run on, and the detection comparison.
"""
import torch
from torch import nn
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retina_plugin.compare import compare_detections

# Not a multiple of 128: padded to 224 x 288, P6 / P7 are 4 x 5 / 2 x 3 cells, so torchvision's
# strides there are 56 and 112 (224 // 4, 224 // 2), not 64 and 128.
HEIGHT, WIDTH = 200, 264
BUILDERS = {"torchvision": retinanet_resnet50_fpn, "torchvision-v2": retinanet_resnet50_fpn_v2}


def random_retinanet(source, num_classes=3, seed=0):
    """
    A torchvision RetinaNet with random weights whose scores spread around the 0.05 threshold:
    BN statistics measured on random images (as training leaves them), GroupNorm affine and
    class biases random, so that some hundreds of (anchor, class) pairs pass, none saturated.
    """
    torch.manual_seed(seed)
    model = BUILDERS[source](weights=None, weights_backbone=None, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average of the batches seen
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        model.backbone.train()(padded_batch(model, seeds=(10, 11)))
        model.eval()
        features = list(model.backbone(padded_batch(model, seeds=(12,))).values())
        classification, regression = model.head.classification_head, model.head.regression_head
        # logits of std 1 around biases N(-6, 1): about 1 % of pairs above 0.05; deltas of std 0.2
        classification.cls_logits.bias.zero_()
        classification.cls_logits.weight /= classification(features).std()
        classification.cls_logits.bias.normal_(-6.0, 1.0)
        regression.bbox_reg.weight *= 0.2 / regression(features).std()
    return model


def padded_batch(model, seeds):
    """Random images of the test's size through torchvision's transform: normalised and padded (N, 3, 224, 288)."""
    model.transform.min_size, model.transform.max_size = (HEIGHT,), 10000
    return model.transform([image(seed) for seed in seeds])[0].tensors


def image(seed=3):
    return torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def assert_same_detections(ours, theirs, allow_ties=False):
    """
    Equal as sets: boxes of both sides at least 1 px wide and high by class, IoU >= 0.999 and
    score within 1e-4; those clipped to (nearly) no area at the image border, where IoU says
    nothing, by class, score and corners within 0.01 px. Both keep those (torchvision does).
    `allow_ties`: as retina_plugin.compare allows, one of two near-equal scores may be kept on
    each side (float rounding of Winograd convolutions, ~1e-5 relative).
    """
    def split(boxes, scores, classes):
        thin = ((boxes[:, 2:] - boxes[:, :2]).min(dim=1).values < 1.0)
        return (boxes[~thin], scores[~thin], classes[~thin]), (boxes[thin], scores[thin], classes[thin])

    (ours_wide, ours_thin), (theirs_wide, theirs_thin) = split(*ours), split(*theirs)
    result = compare_detections(ours_wide, theirs_wide, min_iou=0.999, score_atol=1e-4)
    if allow_ties:
        assert result["match"] and result["matched"] >= 0.98 * len(theirs_wide[0]), result
        return
    assert result["count"][0] == result["count"][1] == result["matched"], result
    assert len(ours_thin[0]) == len(theirs_thin[0])
    taken = torch.zeros(len(ours_thin[0]), dtype=torch.bool)
    for box, score, label in zip(*theirs_thin):
        close = ((ours_thin[0] - box).abs().max(dim=1).values <= 1e-2) & ((ours_thin[1] - score).abs() <= 1e-4)
        options = torch.nonzero(close & (ours_thin[2] == label) & ~taken).squeeze(1)
        nearest = (ours_thin[0] - box).abs().max(dim=1).values.argmin()
        assert len(options), f"torchvision's {box.tolist()} ({score:.4f}, class {label}) is not among ours; nearest {ours_thin[0][nearest].tolist()} {ours_thin[1][nearest]:.4f} {ours_thin[2][nearest]} {taken[nearest]}"
        taken[options[0]] = True
