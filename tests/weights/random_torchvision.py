"""
torchvision RetinaNets with random weights for the conversion tests (nothing downloaded), whose
scores spread around the 0.05 threshold, the images they run on, and the detection comparison.
"""
import importlib.util
from pathlib import Path

import torch
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retina_plugin.compare import compare_detections

# scripts/ is no package: the peer venv's scripts/deepforest_peer.py imports the same file.
_spec = importlib.util.spec_from_file_location("random_weights", Path(__file__).resolve().parents[2] / "scripts" / "random_weights.py")
_random_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_random_weights)
spread_random_weights = _random_weights.spread_random_weights

# Not a multiple of 128: padded to 224 x 288, P6 / P7 are 4 x 5 / 2 x 3 cells, so torchvision's
# strides there are 56 and 112 (224 // 4, 224 // 2), not 64 and 128.
HEIGHT, WIDTH = 200, 264
BUILDERS = {"torchvision": retinanet_resnet50_fpn, "torchvision-v2": retinanet_resnet50_fpn_v2}


def random_retinanet(source, num_classes=3, seed=0):
    """
    A torchvision RetinaNet with random weights whose scores spread around the 0.05 threshold
    (scripts/random_weights.py), its BN statistics measured on random images of the test's size,
    which its transform leaves unscaled and pads to (3, 224, 288).
    """
    torch.manual_seed(seed)
    model = BUILDERS[source](weights=None, weights_backbone=None, num_classes=num_classes)
    model.transform.min_size, model.transform.max_size = (HEIGHT,), 10000
    spread_random_weights(model, [image(10), image(11)], [image(12)])
    return model


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
