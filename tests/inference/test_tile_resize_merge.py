"""
Tiles resized before the network (MODEL.RETINA_PLUGIN.TILE_RESIZE, as torchvision resizes an
image) and merged as DeepForest merges its windows (TILE_MERGE "deepforest", TILE_NMS_THRESH),
and DeepForest's window layout: the pure functions against torchvision's own code, then the
wiring through TiledInference with a real (untrained) RetinaNetPlugin, then the config checks.
The whole path against the `deepforest` package itself: tests/geo/test_deepforest_parity.py.
"""
import re

import pytest
import torch
from detectron2.modeling import build_model
from torchvision.models.detection.transform import _resize_image_and_masks
from torchvision.ops import nms

from retina_plugin.config import check_retina_plugin_config
from retina_plugin.inference.model import InferenceSettings, inference_model
from retina_plugin.inference.tiles import mosaic_merge, tile_grid, tile_starts
from retina_plugin.inference.tile_resize import resize_tile
from retina_plugin.inference.tiling import TiledInference
from tiny_detector import tiny_cfg


@pytest.mark.parametrize("height,width", [(400, 400), (150, 400), (1000, 300), (333, 401)])
def test_resize_tile_is_torchvisions_resize(height, width):
    tile = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height)) * 255

    expected, _ = _resize_image_and_masks(tile, 800.0, 1333.0)
    got = resize_tile(tile, 800, 1333)

    assert got.shape == expected.shape
    assert torch.equal(got, expected)


def test_tile_starts_are_deepforests_windows():
    # slidingwindow.generateForSize: overlap floor(size * fraction), a last window on the edge.
    assert tile_starts(1000, 400, 0.05) == [0, 380, 600]
    assert tile_starts(900, 400, 0.05) == [0, 380, 500]
    assert tile_starts(1140, 400, 0.05) == [0, 380, 740]
    assert tile_starts(1000, 405, 0.3) == [0, 284, 568, 595]  # 121.5 px of overlap: 121
    assert tile_starts(300, 400, 0.05) == [0]
    assert tile_grid(1000, 300, 400, 0.05).tolist() == [[0, 0, 300, 400], [0, 380, 300, 780], [0, 600, 300, 1000]]


def test_mosaic_merge_is_one_nms_over_all_classes_on_whole_pixels():
    boxes = torch.tensor([
        [10.7, 10.2, 50.9, 50.5],  # best
        [11.2, 10.9, 51.3, 50.1],  # another class, same object: suppressed all the same
        [100.5, 100.5, 140.99, 140.2],
        [50.0, 10.0, 90.0, 50.0],  # touches the first: IoU 0 < 0.15, kept
    ])  # fmt: skip
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])

    whole, keep = mosaic_merge(boxes, scores, 0.15, 0)

    assert whole.tolist() == [[10, 10, 50, 50], [11, 10, 51, 50], [100, 100, 140, 140], [50, 10, 90, 50]]
    assert keep.tolist() == [0, 2, 3]
    assert torch.equal(keep, nms(whole, scores, 0.15))
    assert mosaic_merge(boxes, scores, 0.15, 2)[1].tolist() == [0, 2]


@pytest.fixture(scope="module")
def untrained():
    """A tiny RetinaNetPlugin with its initial weights, keeping every candidate (scores ~0.01)."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 50
    return build_model(cfg).eval()


def test_tiles_resized_and_merged_as_deepforest(untrained, single_thread):
    image = torch.randint(0, 256, (3, 150, 200), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    # One tile per forward, as below: the same convolutions, the same scores to the last bit.
    tiled = TiledInference(untrained, tile_size=128, overlap=0.25, tile_batch=1, resize=(256, 1333), merge="deepforest", nms_thresh=0.15)
    seen = []
    hook = untrained.register_forward_pre_hook(lambda m, args: seen.extend((tuple(x["image"].shape), x["height"], x["width"]) for x in args[0]))
    try:
        result = tiled.detect(image)
    finally:
        hook.remove()

    tiles = tile_grid(150, 200, 128, 0.25)
    assert seen == [((3, 256, 256), 128, 128)] * len(tiles) == [((3, 256, 256), 128, 128)] * 4
    boxes, scores = [], []
    with torch.no_grad():
        for x0, y0, x1, y1 in tiles.tolist():
            tile = image[:, y0:y1, x0:x1].float()
            out = untrained([{"image": resize_tile(tile, 256, 1333), "height": 128, "width": 128}])[0]["instances"]
            boxes.append(out.pred_boxes.tensor + torch.tensor([x0, y0, x0, y0]))
            scores.append(out.scores)
    boxes, scores = torch.cat(boxes), torch.cat(scores)
    expected = nms(boxes.trunc(), scores, 0.15)
    assert len(result) == len(expected) > 10
    assert torch.equal(result.pred_boxes.tensor, boxes.trunc()[expected])
    assert torch.equal(result.scores, scores[expected])


def test_tile_keys_reach_tiled_inference():
    cfg = tiny_cfg()
    model = build_model(cfg)
    node = cfg.MODEL.RETINA_PLUGIN
    node.TILE_SIZE, node.TILE_OVERLAP = 400, 0.05
    node.TILE_RESIZE, node.TILE_MERGE, node.TILE_NMS_THRESH = [800, 1333], "deepforest", 0.15
    check_retina_plugin_config(cfg)

    tiled = inference_model(model, InferenceSettings.from_config(cfg))

    assert (tiled.resize, tiled.merge, tiled.nms_thresh) == ((800, 1333), "deepforest", 0.15)
    assert TiledInference(cfg, model).resize == (800, 1333)  # from_config
    node.TILE_NMS_THRESH = 0.0
    assert inference_model(model, InferenceSettings.from_config(cfg)).nms_thresh == cfg.MODEL.RETINANET.NMS_THRESH_TEST


@pytest.mark.parametrize(
    "key,value,why",
    [
        ("TILE_RESIZE", [800], "must be [] (no resize) or [MIN_SIZE, MAX_SIZE]"),
        ("TILE_RESIZE", [800, 600], "must be [] (no resize) or [MIN_SIZE, MAX_SIZE]"),
        ("TILE_RESIZE", [0, 600], "must be [] (no resize) or [MIN_SIZE, MAX_SIZE]"),
        ("TILE_MERGE", "mosaic", "must be one of ('edges', 'deepforest')"),
        ("TILE_NMS_THRESH", 1.5, "must be in (0, 1]"),
    ],
)
def test_tile_merge_and_resize_keys_are_checked(key, value, why):
    cfg = tiny_cfg()
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE = 400
    cfg.MODEL.RETINA_PLUGIN[key] = value
    with pytest.raises(ValueError, match=re.escape(f"cfg.MODEL.RETINA_PLUGIN.{key} = {value!r}: {why}")):
        check_retina_plugin_config(cfg)


def test_tile_resize_is_refused_with_test_time_augmentation():
    cfg = tiny_cfg()
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE, cfg.MODEL.RETINA_PLUGIN.TILE_RESIZE = 400, [800, 1333]
    cfg.TEST.AUG.ENABLED = True
    with pytest.raises(ValueError, match=re.escape("cfg.MODEL.RETINA_PLUGIN.TILE_RESIZE = [800, 1333]: resizes every tile; test-time augmentation")):
        check_retina_plugin_config(cfg)


def test_lazyconfig_inference_settings_carry_the_tile_keys():
    model = build_model(tiny_cfg())
    settings = InferenceSettings(tile_size=400, tile_overlap=0.05, tile_resize=[800, 1333], tile_merge="deepforest", tile_nms_thresh=0.15)

    tiled = inference_model(model, settings)

    assert (tiled.resize, tiled.merge, tiled.nms_thresh) == ((800, 1333), "deepforest", 0.15)
    with pytest.raises(ValueError, match=re.escape("inference.tile_resize = (800, 1333): resizes every tile; with tta")):
        InferenceSettings(tile_size=400, tile_resize=[800, 1333], tta=True)
    with pytest.raises(ValueError, match=re.escape("inference.tile_merge = 'mosaic': must be one of")):
        InferenceSettings(tile_merge="mosaic")
