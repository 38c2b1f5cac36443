"""
Tiled inference of rotated boxes (XYWHA). Model-free, on hand-built per-tile detections: the
tile-edge rules of retina_plugin/inference/tiles.py read a rotated box's enclosing box (checked
against the box's own corners), and the merge uses rotated NMS, so a rotated object across a tile
seam is reported once while diagonal objects side by side, whose enclosing boxes overlap, are all
kept. Then a rotated RetinaNetPlugin run tile by tile gives its tiles' detections so merged.
"""
import math

import pytest
import torch
from detectron2.layers import batched_nms
from detectron2.modeling import build_model
from detectron2.structures import RotatedBoxes

from retina_plugin.inference.tiles import (
    enclosing_boxes,
    keep_tile_detections,
    merge_tile_detections,
    reaches_other_tiles,
    shift_boxes,
    tile_grid,
    tile_interiors,
)
from retina_plugin.inference.model import InferenceSettings, inference_model
from retina_plugin.inference.tiling import TiledInference
from retina_plugin.errors import UserError
from retina_plugin.ops import batched_nms_rotated, pairwise_iou_rotated, rotated_box_corners
from tool_runs import FEW_CANDIDATES, ROTATED_OPTS

# Image 448 x 256: two tiles, [0, 256) and [192, 448) in x, sharing [192, 256); interiors
# [0, 252) and [196, 448) with the 4 px margin; the tiles' centres at x 128 and 320.
HEIGHT, WIDTH, TILE, OVERLAP, MARGIN = 256, 448, 256, 0.25, 4.0


def two_tiles():
    tiles = tile_grid(HEIGHT, WIDTH, TILE, OVERLAP)
    assert tiles.tolist() == [[0, 0, 256, 256], [192, 0, 448, 256]]
    return tiles, tile_interiors(tiles, (HEIGHT, WIDTH), MARGIN)


def corner_bounds(boxes):
    """(N, 4) XYXY: min and max of each rotated box's four corners."""
    corners = rotated_box_corners(boxes)
    return torch.cat([corners.amin(1), corners.amax(1)], dim=1)


def test_enclosing_box_and_shift_of_rotated_boxes():
    boxes = torch.tensor([[100.0, 50.0, 40.0, 10.0, 0.0], [100.0, 50.0, 40.0, 10.0, 90.0], [100.0, 50.0, 40.0, 10.0, 30.0]])
    half_w, half_h = (40 * math.cos(math.pi / 6) + 10 * 0.5) / 2, (40 * 0.5 + 10 * math.cos(math.pi / 6)) / 2
    expected = [[80, 45, 120, 55], [95, 30, 105, 70], [100 - half_w, 50 - half_h, 100 + half_w, 50 + half_h]]
    torch.testing.assert_close(enclosing_boxes(boxes), torch.tensor(expected), atol=1e-4, rtol=0)
    xyxy = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert enclosing_boxes(xyxy) is xyxy
    # a tile's box moves to image coordinates by its centre only: size and angle stay
    assert shift_boxes(boxes[2:], 192.0, 64.0).tolist() == [[292.0, 114.0, 40.0, 10.0, 30.0]]
    assert shift_boxes(xyxy, 192.0, 64.0).tolist() == [[193.0, 66.0, 195.0, 68.0]]


@pytest.mark.parametrize("seed", range(3))
def test_edge_rules_of_rotated_boxes_are_those_of_their_corners_bounds(seed):
    """The edge rules on (N, 5) boxes decide as on the XYXY bounds of the boxes' corners."""
    tiles, interiors = two_tiles()
    g = torch.Generator().manual_seed(seed)
    n = 400
    centres = torch.rand(n, 2, generator=g) * torch.tensor([200.0, 230.0]) + torch.tensor([40.0, 13.0])
    sizes = torch.rand(n, 2, generator=g) * torch.tensor([70.0, 20.0]) + 2
    angles = torch.rand(n, 1, generator=g) * 360 - 180
    boxes = torch.cat([centres, sizes, angles], 1)
    keep = keep_tile_detections(boxes, 0, tiles, interiors)
    assert torch.equal(keep, keep_tile_detections(corner_bounds(boxes), 0, tiles, interiors))
    assert 0 < keep.sum() < n  # both outcomes occur
    shared = reaches_other_tiles(boxes, 0, tiles)
    assert torch.equal(shared, reaches_other_tiles(corner_bounds(boxes), 0, tiles))
    assert 0 < shared.sum() < n


def test_keep_tile_detections_of_rotated_boxes():
    tiles, interiors = two_tiles()
    in_tile0 = torch.tensor(
        [
            [100.0, 100.0, 60.0, 10.0, 45.0],  # whole, far from any edge: kept
            # Centre x 235, nearer tile 1's centre; its corners span x 220.5..249.5, inside both
            # interiors: seen whole by both, reported by tile 1.
            [235.0, 100.0, 30.0, 6.0, 30.0],
            # Centre x 215, nearer tile 0's; turned 80 degrees its corners span x 206.6..223.4:
            # seen whole by both, reported by tile 0 ...
            [215.0, 100.0, 40.0, 10.0, 80.0],
            # ... but lying flat it spans x 195..235: not whole in tile 1 (interior from 196),
            # whole in tile 0: tile 0 reports it.
            [215.0, 150.0, 40.0, 10.0, 0.0],
            # Turned 60 degrees, its corners reach x 253.5, into tile 0's margin: a piece, whole in tile 1.
            [240.0, 100.0, 40.0, 8.0, 60.0],
        ]
    )
    assert keep_tile_detections(in_tile0, 0, tiles, interiors).tolist() == [True, False, True, True, False]
    assert keep_tile_detections(torch.zeros(0, 5), 0, tiles, interiors).shape == (0,)


def test_merge_of_rotated_boxes_uses_rotated_nms():
    # Two diagonal cars side by side, their centres 14 px apart across their long sides:
    # disjoint, but their enclosing boxes overlap with IoU 0.58, which an NMS of horizontal
    # boxes at 0.5 suppresses.
    cars = torch.tensor([[224.0, 128.0, 90.0, 10.0, 45.0], [234.0, 138.0, 90.0, 10.0, 45.0]])
    assert pairwise_iou_rotated(cars[:1], cars[1:]).item() == 0.0
    enclosing = enclosing_boxes(cars)
    assert batched_nms(enclosing, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.5).tolist() == [0]
    # The same car seen by two tiles (2 degrees and 1 px apart): one suppressed.
    same = torch.tensor([[224.0, 128.0, 60.0, 10.0, 45.0], [225.0, 128.0, 60.0, 10.0, 47.0]])
    boxes = torch.cat([cars, same + torch.tensor([0.0, 80.0, 0.0, 0.0, 0.0])])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    classes = torch.zeros(4, dtype=torch.int64)
    shared = torch.ones(4, dtype=torch.bool)
    assert merge_tile_detections(boxes, scores, classes, shared, 0.5, 0).tolist() == [0, 1, 2]
    assert merge_tile_detections(boxes, scores, classes, shared, 0.5, 2).tolist() == [0, 1]


def merge_tiles(per_tile, tiles, interiors, nms_thresh=0.5):
    """
    What TiledInference.detect_windows does with the tiles' detections: per tile (boxes in tile
    coordinates, scores, classes) -> the merged boxes, scores, classes in image coordinates.
    """
    boxes, scores, classes, shared = [], [], [], []
    for index, (tile_boxes, tile_scores, tile_classes) in enumerate(per_tile):
        x0, y0 = tiles[index, :2].tolist()
        tile_boxes = shift_boxes(tile_boxes, x0, y0)
        keep = keep_tile_detections(tile_boxes, index, tiles, interiors)
        boxes.append(tile_boxes[keep]), scores.append(tile_scores[keep]), classes.append(tile_classes[keep])
        shared.append(reaches_other_tiles(tile_boxes[keep], index, tiles))
    boxes, scores, classes, shared = (torch.cat(x) for x in (boxes, scores, classes, shared))
    keep = merge_tile_detections(boxes, scores, classes, shared, nms_thresh, 0)
    return boxes[keep], scores[keep], classes[keep]


def test_a_rotated_object_across_the_seam_is_found_once():
    """
    Objects across the seam at x 192..256, each as both tiles detect it (in tile coordinates,
    a few pixels and degrees apart): a ship seen whole by both; a barge longer than the overlap,
    seen by neither whole (each tile's box reaching past its edge); two parked cars side by side
    seen cut. Each object comes out once, as one of its two detections.
    """
    tiles, interiors = two_tiles()
    objects = torch.tensor(
        [
            [222.0, 60.0, 40.0, 10.0, 35.0],  # ship
            [224.0, 130.0, 140.0, 16.0, -10.0],  # barge
            [224.0, 200.0, 90.0, 10.0, 45.0],  # car 1
            [234.0, 210.0, 90.0, 10.0, 45.0],  # car 2, 14 px beside car 1
        ]
    )
    jitter = torch.tensor([[1.0, -1.0, 2.0, 0.0, 2.0]])
    one_class = torch.zeros(4, dtype=torch.int64)
    tile0 = (objects.clone(), torch.tensor([0.90, 0.85, 0.80, 0.75]), one_class)
    tile1 = (shift_boxes(objects + jitter, -192.0, 0.0), torch.tensor([0.88, 0.86, 0.78, 0.77]), one_class)
    boxes, scores, _ = merge_tiles([tile0, tile1], tiles, interiors)

    assert len(boxes) == len(objects), boxes
    iou = pairwise_iou_rotated(objects, boxes)
    assert (iou.max(1).values > 0.7).all()
    assert sorted(iou.argmax(0).tolist()) == [0, 1, 2, 3]  # one detection per object
    # The ship from tile 0, whose centre (x 222) is nearer; the barge and cars by score.
    assert scores.tolist() == pytest.approx([0.90, 0.86, 0.80, 0.77])
    # All four pairs overlap across the seam: their enclosing boxes merged by a horizontal NMS
    # would lose car 2, whose enclosing box overlaps car 1's.
    assert len(batched_nms(enclosing_boxes(boxes), scores, torch.zeros(4, dtype=torch.int64), 0.5)) < 4


@pytest.mark.parametrize("seed", range(3))
def test_nms_over_the_shared_rotated_boxes_equals_nms_over_all(seed):
    """As for horizontal boxes: the merge keeps what one rotated NMS over every box keeps."""
    g = torch.Generator().manual_seed(seed)
    tiles = tile_grid(500, 600, 256, 0.25)
    boxes, scores, classes, shared = [], [], [], []
    for index, (x0, y0, x1, y1) in enumerate(tiles.tolist()):
        n = 40
        sizes = torch.rand(n, 2, generator=g) * torch.tensor([40.0, 14.0]) + 3
        angles = torch.rand(n, 1, generator=g) * 360 - 180
        # centres far enough inside the tile that every corner is in it
        reach = sizes.norm(dim=1, keepdim=True) / 2
        span = torch.tensor([x1 - x0, y1 - y0]).float() - 2 * reach
        centres = torch.tensor([x0, y0]).float() + reach + torch.rand(n, 2, generator=g) * span
        b = torch.cat([centres, sizes, angles], 1)
        s, c = torch.rand(n, generator=g), torch.randint(0, 2, (n,), generator=g)
        keep = batched_nms_rotated(b, s, c, 0.3)
        boxes.append(b[keep]), scores.append(s[keep]), classes.append(c[keep])
        shared.append(reaches_other_tiles(b[keep], index, tiles))
    boxes, scores, classes, shared = (torch.cat(x) for x in (boxes, scores, classes, shared))
    assert 0 < shared.sum() < len(shared)
    expected = batched_nms_rotated(boxes, scores, classes, 0.3)
    got = merge_tile_detections(boxes, scores, classes, shared, 0.3, 0)
    assert len(got) < len(boxes)
    assert sorted(got.tolist()) == sorted(expected.tolist())


def test_deepforest_merge_is_refused_for_rotated_boxes():
    with pytest.raises(UserError, match="TILE_MERGE deepforest merges horizontal boxes .* use TILE_MERGE edges"):
        TiledInference(torch.nn.Identity(), tile_size=256, merge="deepforest", box_dim=5)


def test_tiled_run_of_a_rotated_model_is_its_tiles_detections_merged(small_cfg, single_thread):
    """
    A rotated RetinaNetPlugin (random weights) run tile by tile through `inference_model`: its
    result is the tiles' own detections (RotatedBoxes, in tile coordinates) through the edge
    rules and the rotated merge, and no two kept boxes of a class overlap over the threshold.
    """
    small_cfg.merge_from_list(ROTATED_OPTS + FEW_CANDIDATES + ["MODEL.RETINANET.PRIOR_PROB", 0.3, "TEST.DETECTIONS_PER_IMAGE", 60])
    torch.manual_seed(0)
    model = build_model(small_cfg).eval()
    # One tile a forward, as the reference below runs them: batched convolutions round otherwise.
    tiled = inference_model(model, InferenceSettings(tile_size=TILE, tile_overlap=OVERLAP, tile_batch=1))
    assert isinstance(tiled, TiledInference) and tiled.box_dim == 5
    image = (torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    tiles, interiors = two_tiles()
    with torch.no_grad():
        result = tiled.detect(image)
        per_tile = []
        for x0, y0, x1, y1 in tiles.tolist():
            instances = model([{"image": image[:, y0:y1, x0:x1].float()}])[0]["instances"]
            assert isinstance(instances.pred_boxes, RotatedBoxes)
            per_tile.append((instances.pred_boxes.tensor, instances.scores, instances.pred_classes))
    boxes, scores, classes = merge_tiles(per_tile, tiles, interiors, tiled.nms_thresh)

    assert isinstance(result.pred_boxes, RotatedBoxes) and result.image_size == (HEIGHT, WIDTH)
    assert 0 < len(result) < 120  # at most 60 a tile, some dropped or merged
    torch.testing.assert_close(result.pred_boxes.tensor, boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.scores, scores, atol=1e-6, rtol=0)
    assert torch.equal(result.pred_classes, classes)
    assert (result.pred_boxes.tensor[:, 0] > 256).any()  # shifted from tile 1
    same_class = result.pred_classes[:, None] == result.pred_classes[None]
    iou = pairwise_iou_rotated(result.pred_boxes.tensor, result.pred_boxes.tensor).fill_diagonal_(0)
    assert not (same_class & (iou > tiled.nms_thresh)).any()
