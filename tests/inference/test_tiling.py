"""
Tiled inference (retina_plugin/inference/tiling.py): the tile grid, the choice of one tile per object
(pieces cut by a tile edge dropped) and the merge, as pure functions; then a real RetinaNetPlugin, trained here for a few hundred iterations on
128x128 images of 10-20 px shapes (one class, "shape": at 10 px circles, squares and
triangles look alike), run on one 1024x1024 image of 75 such shapes: resized to the test
size as a whole it misses them, tiled at native resolution it finds them, once each.
Also tiled evaluation through Detectron2's `inference_on_dataset` and the trainer's `test`,
the forward inputs on a 4000x3000 image (no input larger than a tile), and tools/demo.py --tile.
"""
import math
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultPredictor
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances, pairwise_iou

from retina_plugin.data.shapes import generate_shapes_dataset
from retina_plugin.engine import Trainer
from retina_plugin.inference.evaluation import UNCAPPED_TILED_DETECTIONS, evaluation_max_detections
from retina_plugin.inference.model import InferenceSettings, inference_model
from retina_plugin.inference.predictor import TiledPredictor
from retina_plugin.inference.tiling import TiledInference
from retina_plugin.inference.tiling_checks import check_tiled_evaluation
from retina_plugin.inference.tiles import (
    EDGE_MARGIN,
    keep_tile_detections,
    merge_tile_detections,
    reaches_other_tiles,
    tile_grid,
    tile_interiors,
    tile_starts,
)
from retina_plugin.config import check_retina_plugin_config
from tiny_detector import OBJECT_SIZES, load_shapes_split, tiny_cfg

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LARGE_SIZE, LARGE_SEED, LARGE_MAX_OBJECTS = 1024, 1, 120  # seed 1 draws 75 shapes
TILE, OVERLAP = 256, 0.25
SCORE = 0.5  # a detection counts from this score on (the demo's default threshold)
LARGE_DATASET = "retina_tiling_test_large"


@pytest.fixture(scope="session")
def large_scene(tmp_path_factory):
    """One 1024x1024 shapes image with 75 shapes of 10-20 px, registered as LARGE_DATASET."""
    root = tmp_path_factory.mktemp("tiling") / "large"
    generate_shapes_dataset(
        root, num_train=0, num_val=1, image_size=LARGE_SIZE, seed=LARGE_SEED,
        min_object_size=OBJECT_SIZES[0], max_object_size=OBJECT_SIZES[1], max_objects=LARGE_MAX_OBJECTS,
    )  # fmt: skip
    (image, boxes, classes), = load_shapes_split(root, "val")
    if LARGE_DATASET in DatasetCatalog.list():
        DatasetCatalog.remove(LARGE_DATASET)
        MetadataCatalog.remove(LARGE_DATASET)
    register_coco_instances(LARGE_DATASET, {}, str(root / "annotations" / "shape_val.json"), str(root / "val"))
    return SimpleNamespace(image=image, boxes=boxes, classes=classes, path=str(root / "val" / "000000.png"))


def cover_count(tiles, height, width):
    """(height, width) array: how many of `tiles` cover each pixel."""
    count = np.zeros((height, width), np.int32)
    for x0, y0, x1, y1 in tiles.tolist():
        count[y0:y1, x0:x1] += 1
    return count


def found(instances, gt_boxes, gt_classes):
    """(G,) bool: which ground-truth boxes a detection of their class matches at IoU >= 0.5."""
    if len(instances) == 0:
        return torch.zeros(len(gt_boxes), dtype=torch.bool)
    iou = pairwise_iou(Boxes(gt_boxes), instances.pred_boxes.to("cpu"))
    same_class = gt_classes[:, None] == instances.pred_classes.cpu()[None]
    return ((iou >= 0.5) & same_class).any(1)


def detections_per_object(instances, gt_boxes):
    """
    (G,) per ground-truth box, the detections that are it or a piece of it: IoU >= 0.5 with
    it, or at least half of the detection's area inside it (a piece cut by a tile edge).
    """
    det = instances.pred_boxes.tensor.cpu()
    lt = torch.max(gt_boxes[:, None, :2], det[None, :, :2])
    rb = torch.min(gt_boxes[:, None, 2:], det[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    det_area = (det[:, 2:] - det[:, :2]).prod(1)
    iou = pairwise_iou(Boxes(gt_boxes), Boxes(det))
    return ((iou >= 0.5) | (inter >= 0.5 * det_area[None])).sum(1)


def tiles_merged_by_nms_only(model, image, nms_thresh):
    """Tiled detection without `keep_tile_detections`: every tile's boxes, shifted, merged by NMS."""
    tiles = tile_grid(image.shape[0], image.shape[1], TILE, OVERLAP)
    image = torch.from_numpy(image).permute(2, 0, 1)
    boxes, scores, classes = [], [], []
    with torch.no_grad():
        for x0, y0, x1, y1 in tiles.tolist():
            instances = model([{"image": image[:, y0:y1, x0:x1].float()}])[0]["instances"]
            boxes.append(instances.pred_boxes.tensor + torch.tensor([x0, y0, x0, y0]))
            scores.append(instances.scores)
            classes.append(instances.pred_classes)
    boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
    keep = batched_nms(boxes, scores, classes, nms_thresh)[:1000]
    return Instances(
        image.shape[1:], pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep]
    )


# --------------------------------------------------------------------------------------------
# The geometry, as pure functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height,width,tile,overlap",
    [
        (1024, 1024, 256, 0.25),
        (1000, 1500, 256, 0.2),
        (513, 700, 128, 0.5),
        (3000, 4000, 512, 0.0),
        (100, 90, 256, 0.2),  # smaller than a tile: one tile, the whole image
        (256, 600, 256, 0.2),
    ],
)
def test_tile_grid_covers_every_pixel_with_the_overlap_asked(height, width, tile, overlap):
    tiles = tile_grid(height, width, tile, overlap)

    x0, y0, x1, y1 = tiles.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= width).all() and (y1 <= height).all()
    assert ((x1 - x0) == min(tile, width)).all() and ((y1 - y0) == min(tile, height)).all()
    assert cover_count(tiles, height, width).min() >= 1
    min_overlap = math.floor(tile * overlap)
    for length in (height, width):
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        steps = np.diff(starts)
        assert (steps > 0).all()
        assert (min(tile, length) - steps >= min_overlap).all(), "neighbours share less than the overlap asked"
        assert (steps[:-1] == tile - min_overlap).all(), "only the last tile (aligned to the edge) overlaps more"
    assert len(tiles) == len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def test_tile_starts_examples():
    assert tile_starts(1024, 256, 0.25) == [0, 192, 384, 576, 768]
    assert tile_starts(1000, 256, 0.25) == [0, 192, 384, 576, 744]
    assert tile_starts(256, 256, 0.25) == [0]
    assert tile_starts(90, 256, 0.25) == [0]
    assert tile_grid(90, 100, 256, 0.2).tolist() == [[0, 0, 100, 90]]


def test_keep_tile_detections_reports_each_object_from_one_tile():
    # Image 448 x 256: two tiles, [0, 256) and [192, 448) in x, sharing the 64 px [192, 256);
    # centres at x 128 and 320, so the overlap is split at x 224.
    tiles = tile_grid(256, 448, 256, 0.25)
    assert tiles.tolist() == [[0, 0, 256, 256], [192, 0, 448, 256]]
    interiors = tile_interiors(tiles, (256, 448), margin=4.0)
    assert interiors.tolist() == [[0, 0, 252, 256], [196, 0, 448, 256]]
    boxes_in_tile0 = torch.tensor(
        [
            [100.0, 100.0, 120.0, 120.0],  # whole, far from any edge: kept
            [230.0, 100.0, 256.0, 120.0],  # cut by tile 0's right edge; whole in tile 1: dropped
            [230.0, 100.0, 253.0, 120.0],  # ends within the margin of that edge: dropped
            [200.0, 100.0, 240.0, 120.0],  # whole in both, centre x 220 nearer tile 0's: kept
            [215.0, 100.0, 240.0, 120.0],  # whole in both, centre x 227.5 nearer tile 1's: dropped
            [150.0, 10.0, 256.0, 40.0],  # cut, but starts left of tile 1: nobody sees it whole: kept
            [0.0, 0.0, 15.0, 256.0],  # touches the image border on three sides: kept
            [192.0, 240.0, 250.0, 256.0],  # on the image's bottom border, inside tile 0: kept
        ]
    )
    keep = keep_tile_detections(boxes_in_tile0, 0, tiles, interiors)
    assert keep.tolist() == [True, False, False, True, False, True, True, True]
    boxes_in_tile1 = torch.tensor(
        [
            [192.0, 50.0, 210.0, 70.0],  # cut by tile 1's left edge, whole in tile 0: dropped
            [300.0, 50.0, 448.0, 70.0],  # reaches the image's right border: kept
            [192.0, 80.0, 300.0, 90.0],  # cut, but too long for tile 0: kept
            [200.0, 100.0, 240.0, 120.0],  # the two boxes seen whole by both, from tile 1:
            [215.0, 100.0, 240.0, 120.0],  # each kept by exactly one of the two tiles
        ]
    )
    keep = keep_tile_detections(boxes_in_tile1, 1, tiles, interiors)
    assert keep.tolist() == [False, True, True, False, True]
    assert keep_tile_detections(torch.zeros(0, 4), 1, tiles, interiors).shape == (0,)


def test_tile_interiors_shrink_only_interior_edges():
    tiles = tile_grid(1000, 1000, 400, 0.25)  # starts 0, 300, 600 on both axes
    interiors = tile_interiors(tiles, (1000, 1000), margin=EDGE_MARGIN)
    corner, centre = interiors[0].tolist(), interiors[4].tolist()
    assert corner == [0, 0, 400 - EDGE_MARGIN, 400 - EDGE_MARGIN]
    assert centre == [300 + EDGE_MARGIN, 300 + EDGE_MARGIN, 700 - EDGE_MARGIN, 700 - EDGE_MARGIN]
    assert interiors[-1].tolist() == [600 + EDGE_MARGIN, 600 + EDGE_MARGIN, 1000, 1000]


def test_merge_tile_detections_is_classwise_nms_with_a_cap():
    boxes = torch.tensor(
        [
            [10.0, 10.0, 30.0, 30.0],  # an object seen by two tiles ...
            [11.0, 10.0, 31.0, 30.0],  # ... nearly the same box, lower score: suppressed
            [11.0, 10.0, 31.0, 30.0],  # the same box as another class: kept (class-wise NMS)
            [100.0, 100.0, 120.0, 120.0],
            [200.0, 200.0, 220.0, 220.0],
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    classes = torch.tensor([0, 0, 1, 0, 0])
    shared = torch.tensor([True, True, True, False, True])
    assert merge_tile_detections(boxes, scores, classes, shared, 0.5, 100).tolist() == [0, 2, 3, 4]
    assert merge_tile_detections(boxes, scores, classes, shared, 0.5, 2).tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(5))
def test_nms_over_the_shared_boxes_equals_nms_over_all(seed):
    # Detections as the tiles give them: inside their tile, each tile's set already through
    # class-wise NMS. The merge must keep what one NMS over every box keeps.
    g = torch.Generator().manual_seed(seed)
    tiles = tile_grid(700, 900, 256, 0.25)
    boxes, scores, classes, shared = [], [], [], []
    for index, (x0, y0, x1, y1) in enumerate(tiles.tolist()):
        xy = torch.rand(60, 2, generator=g) * torch.tensor([x1 - x0 - 8, y1 - y0 - 8]) + torch.tensor([x0, y0])
        wh = torch.rand(60, 2, generator=g) * 40 + 4
        b = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([x1, y1]).float())], 1)
        s, c = torch.rand(60, generator=g), torch.randint(0, 2, (60,), generator=g)
        keep = batched_nms(b, s, c, 0.5)
        boxes.append(b[keep]), scores.append(s[keep]), classes.append(c[keep])
        shared.append(reaches_other_tiles(b[keep], index, tiles))
    boxes, scores, classes, shared = (torch.cat(x) for x in (boxes, scores, classes, shared))
    assert 0 < shared.sum() < len(shared)
    expected = batched_nms(boxes, scores, classes, 0.5)
    got = merge_tile_detections(boxes, scores, classes, shared, 0.5, len(boxes))
    assert sorted(got.tolist()) == sorted(expected.tolist())
    assert torch.equal(scores[got], scores[expected])


@pytest.mark.parametrize(
    "key,value",
    [("TILE_SIZE", -1), ("TILE_OVERLAP", 1.0), ("TILE_OVERLAP", -0.1), ("TILE_BATCH", 0)],
)
def test_tile_config_is_checked(key, value):
    cfg = tiny_cfg()
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE = 512
    cfg.MODEL.RETINA_PLUGIN[key] = value
    with pytest.raises(ValueError, match=re.escape(f"cfg.MODEL.RETINA_PLUGIN.{key} = {value!r}")):
        check_retina_plugin_config(cfg)  # what load_config runs before anything is built


def test_tiled_model_needs_a_test_loader_that_does_not_resize():
    cfg = tiny_cfg()
    model = build_model(cfg)
    assert cfg.MODEL.RETINA_PLUGIN.TILE_SIZE == 0
    assert inference_model(model, InferenceSettings.from_config(cfg)) is model
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE = 512
    with pytest.raises(ValueError, match=r"cfg.INPUT.MIN_SIZE_TEST = 128: tiled evaluation"):
        check_tiled_evaluation(cfg)
    cfg.INPUT.MIN_SIZE_TEST = 0
    check_tiled_evaluation(cfg)
    tiled = inference_model(model, InferenceSettings.from_config(cfg))
    assert isinstance(tiled, TiledInference) and tiled.model is model
    assert (tiled.tile_size, tiled.overlap, tiled.tile_batch) == (512, 0.2, 4)


# --------------------------------------------------------------------------------------------
# With a trained RetinaNetPlugin
# --------------------------------------------------------------------------------------------


def test_tiled_boxes_are_the_tile_detections_shifted(trained, large_scene, single_thread):
    image = torch.from_numpy(large_scene.image[:256, :448]).permute(2, 0, 1)  # two tiles, x0 0 and 192
    tiled = TiledInference(trained.model, tile_size=TILE, overlap=OVERLAP, detections_per_image=1000)

    result = tiled.detect(image)

    per_tile = []
    with torch.no_grad():
        for x0 in (0, 192):
            instances = trained.model([{"image": image[:, :, x0 : x0 + TILE].float()}])[0]["instances"]
            per_tile.append((instances.pred_boxes.tensor + torch.tensor([x0, 0, x0, 0]), instances))
    candidates = torch.cat([boxes for boxes, _ in per_tile])
    candidate_scores = torch.cat([inst.scores for _, inst in per_tile])
    candidate_classes = torch.cat([inst.pred_classes for _, inst in per_tile])
    assert result.image_size == (256, 448)
    assert len(result) > 5
    for box, score, cls in zip(result.pred_boxes.tensor, result.scores, result.pred_classes):
        # Batched and single-tile convolutions round differently: equal up to float error.
        same = (candidates - box).abs().amax(1) < 1e-3
        same &= ((candidate_scores - score).abs() < 1e-4) & (candidate_classes == cls)
        assert same.any(), f"{box.tolist()} is not a tile's detection shifted to image coordinates"
    only_tile1 = result.pred_boxes.tensor[:, 0] >= 256
    assert only_tile1.any(), "no detection from the shifted tile"


def test_tiled_prediction_finds_small_objects_once_each(trained, large_scene, single_thread):
    cfg = trained.cfg.clone()
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE, cfg.MODEL.RETINA_PLUGIN.TILE_OVERLAP = TILE, OVERLAP
    native_cfg = cfg.clone()
    native_cfg.INPUT.MIN_SIZE_TEST, native_cfg.INPUT.MAX_SIZE_TEST = LARGE_SIZE, LARGE_SIZE
    gt_boxes, gt_classes = large_scene.boxes, large_scene.classes
    assert len(gt_boxes) >= 50
    assert pairwise_iou(Boxes(gt_boxes), Boxes(gt_boxes)).fill_diagonal_(0).max() <= 0.1

    whole = DefaultPredictor(cfg)(large_scene.image)["instances"]  # resized to MIN_SIZE_TEST 128
    native = DefaultPredictor(native_cfg)(large_scene.image)["instances"]  # one 1024x1024 input
    predictor = TiledPredictor(cfg)
    start = time.perf_counter()
    tiled = predictor(large_scene.image)["instances"]
    seconds = time.perf_counter() - start
    whole, native, tiled = (x[x.scores >= SCORE] for x in (whole, native, tiled))

    recall = {
        name: found(x, gt_boxes, gt_classes).float().mean().item()
        for name, x in (("whole", whole), ("native", native), ("tiled", tiled))
    }
    num_tiles = predictor.tiled.num_tiles(LARGE_SIZE, LARGE_SIZE)
    print(
        f"\n{len(gt_boxes)} objects; recall@IoU0.5 (score >= {SCORE}): whole image resized to "
        f"{cfg.INPUT.MIN_SIZE_TEST} px {recall['whole']:.3f}, whole image at native size "
        f"{recall['native']:.3f}, tiled {recall['tiled']:.3f} ({num_tiles} tiles of {TILE}, {seconds:.2f}s)"
    )
    assert tiled.image_size == (LARGE_SIZE, LARGE_SIZE)
    assert recall["tiled"] >= 0.7
    assert recall["whole"] <= recall["tiled"] - 0.5

    # Found once. Tiling could duplicate the objects near the seams: one in the overlap of two
    # tiles is seen whole by both (the NMS merges the two boxes), one across a tile edge is
    # also seen cut by a tile (that piece, IoU < 0.5 with the object but inside it, must be
    # dropped). Each of them is at most one detection, counting pieces.
    cover = cover_count(tile_grid(LARGE_SIZE, LARGE_SIZE, TILE, OVERLAP), LARGE_SIZE, LARGE_SIZE)
    near_seams = torch.tensor([cover[y0:y1, x0:x1].max() >= 2 for x0, y0, x1, y1 in gt_boxes.int().tolist()])
    assert near_seams.sum() >= 30
    assert detections_per_object(tiled, gt_boxes[near_seams]).max() <= 1
    assert found(tiled, gt_boxes[near_seams], gt_classes[near_seams]).float().mean() >= 0.7
    # And no object at all is matched (IoU >= 0.5) by two detections.
    assert (pairwise_iou(Boxes(gt_boxes), tiled.pred_boxes) >= 0.5).sum(1).max() <= 1

    # Merged by the NMS alone, the tiles report pieces and second boxes: the check above can fail.
    nms_thresh = cfg.MODEL.RETINANET.NMS_THRESH_TEST
    nms_only = tiles_merged_by_nms_only(predictor.model, large_scene.image, nms_thresh)
    nms_only = nms_only[nms_only.scores >= SCORE]
    twice = detections_per_object(nms_only, gt_boxes[near_seams]) >= 2
    print(f"objects near the seams reported more than once by tiles merged with NMS only: {int(twice.sum())}")
    assert twice.any()


def test_tiled_evaluation_with_inference_on_dataset_and_trainer_test(
    trained, large_scene, tmp_path, single_thread
):
    cfg = trained.cfg.clone()
    cfg.DATASETS.TEST = (LARGE_DATASET,)
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.RETINA_PLUGIN.TILE_SIZE, cfg.MODEL.RETINA_PLUGIN.TILE_OVERLAP = TILE, OVERLAP
    cfg.INPUT.MIN_SIZE_TEST = 0  # the test loader must not resize: tiles are seen at native size
    model = trained.model

    loader = build_detection_test_loader(cfg, LARGE_DATASET)
    # The whole image has no cap of detections (TILED_DETECTIONS_PER_IMAGE 0), and COCOeval
    # scores them all, not COCO's best 100.
    assert evaluation_max_detections(cfg) == UNCAPPED_TILED_DETECTIONS
    evaluator = COCOEvaluator(LARGE_DATASET, output_dir=str(tmp_path / "direct"), max_dets_per_image=UNCAPPED_TILED_DETECTIONS)
    tiled = inference_on_dataset(inference_model(model, InferenceSettings.from_config(cfg)), loader, evaluator)["bbox"]
    best_100 = inference_on_dataset(
        inference_model(model, InferenceSettings.from_config(cfg)), loader, COCOEvaluator(LARGE_DATASET, output_dir=str(tmp_path / "best100"))
    )["bbox"]

    via_trainer = Trainer.test(cfg, model)["bbox"]  # what train_net's evaluation calls
    whole_cfg = trained.cfg.clone()
    whole_cfg.DATASETS.TEST = (LARGE_DATASET,)
    whole_cfg.OUTPUT_DIR = str(tmp_path / "whole")
    whole = Trainer.test(whole_cfg, model)["bbox"]  # TILE_SIZE 0: resized to MIN_SIZE_TEST 128

    print(f"\nbbox AP50 on the 1024x1024 image: tiled {tiled['AP50']:.1f}, resized to 128 px {whole['AP50']:.1f}")
    assert via_trainer["AP"] == pytest.approx(tiled["AP"])
    assert tiled["AP"] > best_100["AP"]  # the image has more than 100 objects
    assert tiled["AP50"] >= 50
    assert whole["AP50"] <= 10
    assert model.training is False


def test_forward_inputs_stay_tile_sized_on_a_4000x3000_image(trained, single_thread):
    tile, batch = 512, 4
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(3000, 4000, 3), dtype=np.uint8)
    tiled = TiledInference(trained.model, tile_size=tile, overlap=0.2, tile_batch=batch)
    model_inputs, backbone_inputs = [], []  # per forward: the (C, H, W) images; the (N, C, H, W) batch
    hooks = [
        trained.model.register_forward_pre_hook(
            lambda module, args: model_inputs.append([(x["image"].dtype, *x["image"].shape) for x in args[0]])
        ),
        trained.model.backbone.register_forward_pre_hook(
            lambda module, args: backbone_inputs.append(tuple(args[0].shape))
        ),
    ]
    try:
        result = tiled.detect(torch.from_numpy(image).permute(2, 0, 1))
    finally:
        for hook in hooks:
            hook.remove()

    num_tiles = len(tile_grid(3000, 4000, tile, 0.2))
    assert num_tiles == tiled.num_tiles(3000, 4000) == 8 * 10
    assert len(model_inputs) == math.ceil(num_tiles / batch)
    assert sum(len(shapes) for shapes in model_inputs) == num_tiles
    tile_shapes = [shape for shapes in model_inputs for shape in shapes]
    assert all(c == 3 and h <= tile and w <= tile for _, c, h, w in tile_shapes)
    assert all(dtype == torch.float32 for dtype, *_ in tile_shapes)
    assert all(n <= batch and h <= tile and w <= tile for n, _, h, w in backbone_inputs)
    assert result.image_size == (3000, 4000)


def test_demo_tiles_a_large_image(trained, large_scene, tmp_path):
    output = tmp_path / "tiled.png"
    result = subprocess.run(
        [
            sys.executable, os.path.join("tools", "demo.py"),
            "--config-file", trained.config_file,
            "--input", large_scene.path,
            "--output", str(output),
            "--tile", "256", "--overlap", "0.25", "--tile-batch", "2",
            "--confidence-threshold", str(SCORE),
            "--opts", "MODEL.WEIGHTS", trained.weights,
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip

    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    written = cv2.imread(str(output))
    assert written is not None and written.shape == large_scene.image.shape
    changed = (np.abs(written.astype(np.int16) - large_scene.image.astype(np.int16)).max(2) > 30).sum()
    assert changed > 2000, "no boxes drawn"
    num_detected = int(re.search(r"detected (\d+) instances", log).group(1))
    assert num_detected >= 0.7 * len(large_scene.boxes)


def test_demo_names_a_bad_tiling_flag(tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    result = subprocess.run(
        [sys.executable, os.path.join("tools", "demo.py"), "--config-file", os.path.join("configs", "shapes_R18_cpu.yaml"),
         "--input", str(image), "--output", str(tmp_path / "out.png"), "--tile", "256", "--overlap", "1.5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "cfg.MODEL.RETINA_PLUGIN.TILE_OVERLAP = 1.5" in result.stderr, result.stderr[-2000:]


def test_train_net_refuses_tiled_evaluation_of_resized_images_before_training(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join("tools", "train_net.py"), "--config-file", os.path.join("configs", "shapes_R18_cpu.yaml"),
         "MODEL.RETINA_PLUGIN.TILE_SIZE", "128", "OUTPUT_DIR", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cfg.INPUT.MIN_SIZE_TEST = 256" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "log.txt").exists()
