"""
torchvision's RetinaNets (v1, v2; random weights, nothing downloaded) converted to
RetinaNetPlugin give torchvision's anchors, head outputs and detections, and go back unchanged.
"""
import pytest
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retina_plugin.compare import compare_detections
from retina_plugin.config import load_config
from retina_plugin.inference.model import load_model
from retina_plugin.modeling import TorchvisionAnchorGenerator
from retina_plugin.weights.convert import convert_to_plugin, convert_to_torchvision
from retina_plugin.weights.torchvision_config import TORCHVISION_ANCHOR_SIZES, TORCHVISION_ASPECT_RATIOS

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


@pytest.fixture(scope="module", params=["torchvision", "torchvision-v2"])
def converted(request, tmp_path_factory):
    """(source, torchvision model, plugin model with WINOGRAD off, its output folder, the source .pth)."""
    source = request.param
    folder = tmp_path_factory.mktemp(source)
    reference = random_retinanet(source)
    torch.save(reference.state_dict(), folder / "source.pth")
    config = convert_to_plugin(source, str(folder / "source.pth"), str(folder / "out"))
    cfg = load_config(config, ["MODEL.RETINA_PLUGIN.WINOGRAD", "False", "INPUT.MIN_SIZE_TEST", "0"])
    return source, reference, load_model(cfg), folder


def padded_batch(model, seeds):
    """Random images of the test's size through torchvision's transform: normalised and padded (N, 3, 224, 288)."""
    model.transform.min_size, model.transform.max_size = (HEIGHT,), 10000
    return model.transform([image(seed) for seed in seeds])[0].tensors


def image(seed=3):
    return torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def torchvision_features(reference, x):
    """torchvision's own transform (no resize: min_size = the image's side) and backbone: (ImageList, [P3..P7])."""
    reference.transform.min_size, reference.transform.max_size = (HEIGHT,), 10000
    images, _ = reference.transform([x])
    return images, list(reference.backbone(images.tensors).values())


def plugin_features(model, x):
    images = model.preprocess_image([{"image": x * 255}])
    features = model.backbone(images.tensor)
    return images, [features[f] for f in model.head_in_features]


def to_size_major(per_anchor, sizes=3, ratios=3):
    """(N, H*W*A, C) in torchvision's ratio-major anchor order -> Detectron2's size-major order."""
    n, rows, c = per_anchor.shape
    return per_anchor.view(n, rows // (sizes * ratios), ratios, sizes, c).transpose(2, 3).reshape(n, rows, c)


@torch.no_grad()
def test_same_padded_input_features_and_head_outputs_per_anchor(converted, single_thread):
    source, reference, model, _ = converted
    tv_images, tv_features = torchvision_features(reference, image())
    images, features = plugin_features(model, image())
    assert tuple(images.tensor.shape[-2:]) == tuple(tv_images.tensors.shape[-2:]) == (224, 288)
    assert (images.tensor - tv_images.tensors).abs().max() < 1e-5
    for ours, theirs in zip(features, tv_features):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()
    tv_head = reference.head(tv_features)
    logits, deltas = model.head(features)
    tv_logits = to_size_major(tv_head["cls_logits"])
    tv_deltas = to_size_major(tv_head["bbox_regression"])
    for ours, theirs in ((torch.cat(logits, dim=1), tv_logits), (torch.cat(deltas, dim=1), tv_deltas)):
        assert ours.shape == theirs.shape
        # float32 rounding of two ResNet-50s (BN folded into the convs here), not order: a
        # wrong permutation differs by the values themselves
        assert (ours - theirs).abs().max() <= 3e-4 * theirs.abs().max()


@torch.no_grad()
def test_same_detections_as_torchvision(converted, single_thread):
    source, reference, model, _ = converted
    reference.transform.min_size, reference.transform.max_size = (HEIGHT,), 10000
    (theirs,) = reference([image()])
    (ours,) = model([{"image": image() * 255, "height": HEIGHT, "width": WIDTH}])
    ours = ours["instances"]
    assert 20 <= len(theirs["scores"]) <= 300 and theirs["scores"].max() < 0.99  # neither none nor saturated
    assert_same_detections((ours.pred_boxes.tensor, ours.scores, ours.pred_classes), (theirs["boxes"], theirs["scores"], theirs["labels"]))


def assert_same_detections(ours, theirs):
    """
    Equal as sets: boxes of both sides at least 1 px wide and high by class, IoU >= 0.999 and
    score within 1e-4; those clipped to (nearly) no area at the image border, where IoU says
    nothing, by class, score and corners within 0.01 px. Both keep those (torchvision does).
    """
    def split(boxes, scores, classes):
        thin = ((boxes[:, 2:] - boxes[:, :2]).min(dim=1).values < 1.0)
        return (boxes[~thin], scores[~thin], classes[~thin]), (boxes[thin], scores[thin], classes[thin])

    (ours_wide, ours_thin), (theirs_wide, theirs_thin) = split(*ours), split(*theirs)
    result = compare_detections(ours_wide, theirs_wide, min_iou=0.999, score_atol=1e-4)
    assert result["count"][0] == result["count"][1] == result["matched"], result
    assert len(ours_thin[0]) == len(theirs_thin[0])
    taken = torch.zeros(len(ours_thin[0]), dtype=torch.bool)
    for box, score, label in zip(*theirs_thin):
        close = ((ours_thin[0] - box).abs().max(dim=1).values <= 1e-2) & ((ours_thin[1] - score).abs() <= 1e-4)
        options = torch.nonzero(close & (ours_thin[2] == label) & ~taken).squeeze(1)
        nearest = (ours_thin[0] - box).abs().max(dim=1).values.argmin()
        assert len(options), f"torchvision's {box.tolist()} ({score:.4f}, class {label}) is not among ours; nearest {ours_thin[0][nearest].tolist()} {ours_thin[1][nearest]:.4f} {ours_thin[2][nearest]} {taken[nearest]}"
        taken[options[0]] = True


def test_anchors_equal_torchvision_including_its_p6_p7_strides():
    """An 800 x 1216 padded image: P6 / P7 grids 13 x 19 / 7 x 10, strides 61 / 114 (800 // 13, 800 // 7)."""
    torchvision_generator = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3).anchor_generator
    ours = TorchvisionAnchorGenerator(
        sizes=TORCHVISION_ANCHOR_SIZES, aspect_ratios=TORCHVISION_ASPECT_RATIOS, strides=[8, 16, 32, 64, 128]
    )
    grids = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    features = [torch.zeros(1, 1, h, w) for h, w in grids]
    (theirs,) = torchvision_generator(ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1216)]), features)
    mine = [boxes.tensor for boxes in ours(features)]
    theirs = to_size_major(theirs[None]).squeeze(0)
    assert torch.equal(torch.cat(mine), theirs)
    p6_centres = (mine[3][::9, :2] + mine[3][::9, 2:]) / 2
    assert p6_centres[1, 0] - p6_centres[0, 0] == 1216 // 19 and p6_centres[19, 1] - p6_centres[0, 1] == 61
    assert (mine[4][9 * 10, 1] - mine[4][0, 1]).item() == 114


def test_round_trip_to_torchvision_gives_identical_tensors(converted, tmp_path):
    source, reference, _, folder = converted
    out = tmp_path / "back.pth"
    convert_to_torchvision(str(folder / "out" / "config.yaml"), str(folder / "out" / "model_final.pth"), str(out))
    back = torch.load(out, weights_only=True)
    original = reference.state_dict()
    assert sorted(back) == sorted(original)
    # BatchNorm2d's training-step counter is no weight (FrozenBN has none): it comes back 0.
    differ = [k for k in original if not torch.equal(back[k], original[k])]
    assert differ and all(k.endswith("num_batches_tracked") for k in differ), differ[:3]
    BUILDERS[source](weights=None, weights_backbone=None, num_classes=3).load_state_dict(back, strict=True)
