"""
3-channel weights in an N-channel model (retina_plugin/weights/band_weights.py, RetinaCheckpointer):
the stem's filters adapted before the shape check, from a .pth and from the .pkl formats that
load by name matching, so that a further band at its PIXEL_MEAN (N = 4), or one gray band
(N = 1), gives the 3-channel model's detections.
"""
import logging
import pickle

import pytest
import torch
from detectron2.modeling import build_model

from retina_plugin import load_config
from retina_plugin.compare import compare_detections
from retina_plugin.weights.band_weights import STEM_WEIGHT, adapt_stem_weight, checkpoint_stem_key
from retina_plugin.weights.checkpoint import RetinaCheckpointer
from tool_runs import BASE_CONFIG, REPO, SMALL_MODEL_OPTS

FVCORE_LOGGER = "fvcore.common.checkpoint"  # RetinaCheckpointer.logger
NIR_MEAN = 110.0  # the fourth band's PIXEL_MEAN: a band at this value is 0 after normalisation


def build(cfg, mean, std, seed=0):
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(mean), list(std)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def load(model, path):
    """Load `path` into `model` with RetinaCheckpointer; the checkpointer's INFO and higher log lines."""
    # A handler on the checkpointer's own logger: Detectron2's setup_logger, when a test ran
    # it before, stops fvcore's records from propagating to pytest's caplog.
    logger, handler = logging.getLogger(FVCORE_LOGGER), _Lines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        RetinaCheckpointer(model).load(str(path))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return handler.lines


def same_detections(a, b):
    a, b = a["instances"], b["instances"]
    result = compare_detections(
        (a.pred_boxes.tensor, a.scores, a.pred_classes), (b.pred_boxes.tensor, b.scores, b.pred_classes),
        min_iou=0.9999, score_atol=1e-5,
    )
    return result["count"][1] > 0 and result["match"] and result["matched"] == result["count"][0] == result["count"][1], result


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory):
    """A 3-channel model (BGR means, std 1) and its state_dict saved as a .pth."""
    model = build(load_config(str(REPO / BASE_CONFIG), SMALL_MODEL_OPTS), [103.53, 116.28, 123.675], [1.0, 1.0, 1.0])
    path = tmp_path_factory.mktemp("rgb") / "rgb.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_adapt_stem_weight():
    w = torch.randn(8, 3, 7, 7)
    for n in (4, 6):
        out = adapt_stem_weight(w, n)
        assert out.shape == (8, n, 7, 7) and torch.equal(out[:, :3], w)
        assert all(torch.equal(out[:, c], w.mean(dim=1)) for c in range(3, n))
    for n in (1, 2):
        out = adapt_stem_weight(w, n)
        assert out.shape == (8, n, 7, 7)
        assert all(torch.allclose(out[:, c], w.sum(dim=1) / n) for c in range(n))
        assert torch.allclose(out.sum(dim=1), w.sum(dim=1), atol=1e-6)  # equal-band image: same response
    with pytest.raises(ValueError, match=r"\(O, 3, kh, kw\)"):
        adapt_stem_weight(torch.randn(8, 4, 7, 7), 3)


def test_checkpoint_stem_key_follows_detectron2s_name_matching():
    assert checkpoint_stem_key([STEM_WEIGHT, "head.cls_score.bias"], False, False) == STEM_WEIGHT
    assert checkpoint_stem_key(["module." + STEM_WEIGHT], False, False) == "module." + STEM_WEIGHT
    assert checkpoint_stem_key(["stem.conv1.weight"], False, False) is None  # would not load either
    torchvision = ["stem.conv1.weight", "res2.0.conv1.weight", "stem.conv1.norm.weight"]
    assert checkpoint_stem_key(torchvision, True, False) == "stem.conv1.weight"
    caffe2 = ["conv1_w", "res_conv1_bn_s", "res2_0_branch2a_w", "fc1000_w"]
    assert checkpoint_stem_key(caffe2, True, True) == "conv1_w"


@pytest.fixture(scope="module")
def four_band(rgb_weights):
    """The 4-band model loaded from rgb_weights' .pth, and the checkpointer's log lines."""
    model = build(load_config(str(REPO / BASE_CONFIG), SMALL_MODEL_OPTS), [103.53, 116.28, 123.675, NIR_MEAN], [1.0] * 4, seed=1)
    return model, load(model, rgb_weights[1])


def test_rgb_pth_loads_into_a_four_band_model(rgb_weights, four_band):
    rgb, _ = rgb_weights
    model, messages = four_band

    saved, loaded = rgb.state_dict(), model.state_dict()
    stem = loaded[STEM_WEIGHT]
    assert stem.shape == (64, 4, 7, 7)
    assert torch.equal(stem[:, :3], saved[STEM_WEIGHT])
    assert torch.equal(stem[:, 3], saved[STEM_WEIGHT].mean(dim=1))
    others = [k for k in saved if k not in (STEM_WEIGHT, "pixel_mean", "pixel_std")]
    assert others and all(torch.equal(loaded[k], saved[k]) for k in others)
    assert any(f"{STEM_WEIGHT}: the checkpoint's stem takes 3 input channels, the model 4" in m
               and "3 -> 4 channels" in m and "channel 3 starts from their mean" in m for m in messages), messages
    assert not any("will not be loaded" in m or "incorrect" in m.lower() for m in messages), messages


def test_a_band_at_its_pixel_mean_keeps_the_rgb_detections(rgb_weights, four_band, single_thread):
    rgb, model = rgb_weights[0], four_band[0]
    image = torch.rand(3, 160, 224, generator=torch.Generator().manual_seed(0)) * 255
    four_bands = torch.cat([image, torch.full((1, 160, 224), NIR_MEAN)])
    with torch.no_grad():
        ok, result = same_detections(model([{"image": four_bands}])[0], rgb([{"image": image}])[0])
    assert ok, result


def test_one_gray_band_gives_the_rgb_models_detections_on_the_gray_image(small_cfg, tmp_path, single_thread):
    # Equal means and stds in R, G, B: the gray image repeated in three channels is normalised
    # like the one band, and the summed filters see it as the three did.
    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.3  # detections from random weights on small inputs
    rgb = build(small_cfg.clone(), [118.0] * 3, [58.0] * 3)
    torch.save({"model": rgb.state_dict()}, tmp_path / "rgb.pth")
    gray_model = build(small_cfg, [118.0], [58.0], seed=1)
    messages = load(gray_model, tmp_path / "rgb.pth")
    assert any("3 -> 1 channels: each channel starts from the sum of the pretrained filters / 1" in m for m in messages)
    gray = torch.rand(1, 160, 224, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        ok, result = same_detections(gray_model([{"image": gray}])[0], rgb([{"image": gray.expand(3, -1, -1)}])[0])
    assert ok, result


@pytest.mark.parametrize("style", ["torchvision", "caffe2"])
def test_pkl_weights_loaded_by_name_matching_are_adapted(rgb_weights, small_cfg, tmp_path, style):
    rgb, _ = rgb_weights
    backbone = {k: v.numpy() for k, v in rgb.backbone.bottom_up.state_dict().items()}
    if style == "torchvision":  # Detectron2's tools/convert-torchvision-to-d2.py output
        data = {"model": backbone, "__author__": "torchvision", "matching_heuristics": True}
    else:  # an ImageNet R-50.pkl of Detectron's model zoo: Caffe2 blob names
        data = {"blobs": {"conv1_w": backbone["stem.conv1.weight"]}}
    with open(tmp_path / "backbone.pkl", "wb") as f:
        pickle.dump(data, f)
    model = build(small_cfg, [103.53, 116.28, 123.675, NIR_MEAN], [1.0] * 4, seed=1)
    messages = load(model, tmp_path / "backbone.pkl")

    key = "stem.conv1.weight" if style == "torchvision" else "conv1_w"
    assert any(m.startswith(f"{key}: the checkpoint's stem takes 3 input channels, the model 4") for m in messages), messages
    stem, saved = model.state_dict()[STEM_WEIGHT], rgb.state_dict()[STEM_WEIGHT]
    assert torch.equal(stem[:, :3], saved) and torch.equal(stem[:, 3], saved.mean(dim=1))
    if style == "torchvision":
        loaded = model.backbone.bottom_up.state_dict()
        assert all(torch.equal(loaded[k], torch.as_tensor(v)) for k, v in backbone.items() if k != "stem.conv1.weight")
