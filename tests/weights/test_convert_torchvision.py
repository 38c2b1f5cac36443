"""
torchvision's RetinaNets (v1, v2; random weights, nothing downloaded) converted to
RetinaNetPlugin give torchvision's anchors, head outputs and detections, and go back unchanged.
"""
import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection import retinanet_resnet50_fpn

from retina_plugin.config import load_config
from retina_plugin.inference.model import load_model
from retina_plugin.modeling import TorchvisionAnchorGenerator
from retina_plugin.weights.convert import convert_to_plugin, convert_to_torchvision
from retina_plugin.weights.torchvision_config import TORCHVISION_ANCHOR_SIZES, TORCHVISION_ASPECT_RATIOS
from random_torchvision import BUILDERS, HEIGHT, WIDTH, assert_same_detections, image, random_retinanet


@pytest.fixture(scope="module", params=["torchvision", "torchvision-v2"])
def converted(request, tmp_path_factory):
    """(source, torchvision model, plugin model with WINOGRAD off, its output folder, the source .pth)."""
    source = request.param
    folder = tmp_path_factory.mktemp(source)
    reference = random_retinanet(source)
    torch.save(reference.state_dict(), folder / "source.pth")
    config = convert_to_plugin(source, str(folder / "source.pth"), str(folder / "out"))
    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.RETINA_PLUGIN.WINOGRAD", "False", "INPUT.MIN_SIZE_TEST", "0"])
    return source, reference, load_model(cfg), folder


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
    source, reference, model, folder = converted
    reference.transform.min_size, reference.transform.max_size = (HEIGHT,), 10000
    (theirs,) = reference([image()])
    (ours,) = model([{"image": image() * 255, "height": HEIGHT, "width": WIDTH}])
    ours = ours["instances"]
    assert 20 <= len(theirs["scores"]) <= 300 and theirs["scores"].max() < 0.99  # neither none nor saturated
    theirs = (theirs["boxes"], theirs["scores"], theirs["labels"])
    assert_same_detections((ours.pred_boxes.tensor, ours.scores, ours.pred_classes), theirs)

    # The written config as it is (Winograd convolutions on): the same detections up to ties.
    with_winograd = load_model(load_config(str(folder / "out" / "config.yaml"), ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "0"]))
    (ours,) = with_winograd([{"image": image() * 255, "height": HEIGHT, "width": WIDTH}])
    ours = ours["instances"]
    assert_same_detections((ours.pred_boxes.tensor, ours.scores, ours.pred_classes), theirs, allow_ties=True)


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


def test_coco_models_carry_torchvisions_91_category_names(tmp_path):
    """torchvision's COCO ids 0..90 keep their names, "__background__" and "N/A" for the unused ids."""
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    torch.save({"model": model.state_dict(), "epoch": 25}, tmp_path / "coco.pth")  # torchvision's reference scripts' checkpoint
    config = convert_to_plugin("torchvision", str(tmp_path / "coco.pth"), str(tmp_path / "out"))
    names = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)["class_names"]
    assert len(names) == 91 and names[:3] == ["__background__", "person", "bicycle"] and names[12] == "N/A"
    assert load_model(load_config(config, ["MODEL.DEVICE", "cpu"])).class_names == names
    assert "# Classes (91; also in model_final.pth): __background__, person, bicycle" in (tmp_path / "out" / "config.yaml").read_text()
