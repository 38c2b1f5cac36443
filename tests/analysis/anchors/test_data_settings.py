"""
Settings from the data (retina_plugin.analysis.anchors.data_settings, tools/analyze_anchors.py
--propose-settings / --write-config): the tiles hold the largest box whole, the input size
brings the small boxes to the smallest anchor, and the tool writes a config that loads and
trains, from a GeoTIFF and its vectors and from a COCO json.
"""
import json
import math

import numpy as np
import pytest
import yaml

from anchor_cases import BASE_CONFIG, SMALL_OPTS, analysis_cfg, write_coco
from retina_plugin import load_config
from retina_plugin.analysis.anchors import AnchorCoverageError, AnchorSetting
from retina_plugin.analysis.anchors.data_settings import BoxSizes, load_box_sizes, propose_input_sizes, propose_tiles
from retina_plugin.inference.tiles import EDGE_MARGIN, shared_pixels, tile_grid, tile_interiors
from tool_runs import run_tool

NARROW_CONFIG = "configs/scenes_narrow_R50_cpu.yaml"


def _square_sizes(sides, image_size=(1024, 1024)):
    sides = np.asarray(sides, np.float64)
    return BoxSizes("boxes", sides, sides, np.array([image_size]))


def _seen_whole(tile, overlap, side, length=3000):
    """Every box of `side` px along an axis of `length` px lies inside some tile's interior (`tile_interiors`)."""
    tiles = tile_grid(tile, length, tile, overlap)
    interiors = tile_interiors(tiles, (tile, length), EDGE_MARGIN)[:, [0, 2]].numpy()
    starts = np.arange(0, length - side + 0.25, 0.5)
    inside = (starts[:, None] >= interiors[None, :, 0]) & (starts[:, None] + side <= interiors[None, :, 1])
    return bool(inside.any(1).all())


def test_tiles_hold_the_largest_box_whole_with_context():
    sizes = _square_sizes(np.linspace(17, 64, 48))
    values = propose_tiles(sizes, 32, percentile=100).values
    tile, overlap = values["MODEL.RETINA_PLUGIN.TILE_SIZE"], values["MODEL.RETINA_PLUGIN.TILE_OVERLAP"]
    assert tile == 256  # the multiple of 32 >= 4 x 64
    assert shared_pixels(tile, overlap) >= 64 + 2 * EDGE_MARGIN and shared_pixels(tile, overlap - 0.01) < 64 + 2 * EDGE_MARGIN
    assert _seen_whole(tile, overlap, 64) and not _seen_whole(tile, overlap - 0.04, 64)
    assert values["INPUT.MIN_SIZE_TRAIN"] == [tile] and values["INPUT.MAX_SIZE_TRAIN"] == tile
    assert values["INPUT.MIN_SIZE_TEST"] == 0
    # A cut of a quarter of the side: the overlap holds 3/4 of the largest box and the margins.
    cut = propose_tiles(sizes, 32, percentile=100, max_cut=0.25).values["MODEL.RETINA_PLUGIN.TILE_OVERLAP"]
    assert shared_pixels(tile, cut) >= 0.75 * 64 + 2 * EDGE_MARGIN and cut < overlap
    # Images tiled only at inference (a COCO json and TILE_SIZE > 0) train whole, unresized.
    whole = propose_tiles(sizes, 32, percentile=100, tiles_are_images=False).values
    assert whole["INPUT.MIN_SIZE_TRAIN"] == [0] and "INPUT.MAX_SIZE_TRAIN" not in whole
    assert whole["MODEL.RETINA_PLUGIN.TILE_SIZE"] == tile and whole["INPUT.MIN_SIZE_TEST"] == 0
    # Tiles follow the backbone's size divisibility and the context asked.
    assert propose_tiles(sizes, 128, percentile=100).values["MODEL.RETINA_PLUGIN.TILE_SIZE"] == 256
    assert propose_tiles(sizes, 32, percentile=100, context=6).values["MODEL.RETINA_PLUGIN.TILE_SIZE"] == 384


def test_the_largest_box_is_a_percentile():
    sizes = _square_sizes([*np.linspace(17, 64, 199), 400.0])  # one outlier in 200
    assert propose_tiles(sizes, 32, percentile=99).values["MODEL.RETINA_PLUGIN.TILE_SIZE"] == 256
    values = propose_tiles(sizes, 32, percentile=100).values
    assert values["MODEL.RETINA_PLUGIN.TILE_SIZE"] == 1600
    assert shared_pixels(1600, values["MODEL.RETINA_PLUGIN.TILE_OVERLAP"]) >= 408
    with pytest.raises(AnchorCoverageError, match="--max-cut 1 in"):
        propose_tiles(sizes, 32, max_cut=1.0)
    with pytest.raises(AnchorCoverageError, match=r"--percentile 40 must be in \(50, 100\]"):
        propose_input_sizes(sizes, analysis_cfg(), 0.5, percentile=40)


def test_input_sizes_bring_the_small_boxes_to_the_smallest_anchor():
    cfg = analysis_cfg()  # anchors 32 .. 812.7 px, foreground IoU 0.5, test size 800 / 1333
    small = _square_sizes(np.linspace(8, 16, 101))
    values = propose_input_sizes(small, cfg, 0.5).values
    scale = values["INPUT.MIN_SIZE_TEST"] / 800
    assert values["INPUT.MIN_SIZE_TEST"] % 32 == 0
    assert small.sqrt_area(1) * scale >= 32 * math.sqrt(0.5)  # the p1 box reaches the 32 px anchor at IoU 0.5
    assert small.sqrt_area(1) * (values["INPUT.MIN_SIZE_TEST"] - 32) / 800 < 32 * math.sqrt(0.5)  # and no more
    assert values["INPUT.MIN_SIZE_TRAIN"] == [math.ceil(256 * scale / 32) * 32]  # SMALL_OPTS train at 256
    assert values["INPUT.MAX_SIZE_TEST"] >= 1333 * scale
    # Boxes the anchors reach at the current size change nothing; boxes beyond the largest shrink the input.
    assert propose_input_sizes(_square_sizes(np.linspace(40, 400, 101)), cfg, 0.5).values == {}
    large = propose_input_sizes(_square_sizes(np.linspace(600, 1500, 101)), cfg, 0.5).values
    largest_anchor = AnchorSetting.from_config(cfg).sizes[-1][-1]
    assert large["INPUT.MIN_SIZE_TEST"] == 608 and 1491 * 608 / 800 <= largest_anchor / math.sqrt(0.5) < 1491 * 640 / 800


def _anchor_coverage(out):
    return json.loads((out / "anchor_coverage.json").read_text())


@pytest.fixture(scope="module")
def crowns(tmp_path_factory):
    """A 768 px GeoTIFF of objects 17-64 px (one class) and its vectors: (scene, raster path, vectors path)."""
    from retina_plugin.geo.scenes import write_shapes_scene

    root = tmp_path_factory.mktemp("crowns")
    raster, vectors = str(root / "crowns.tif"), str(root / "crowns.gpkg")
    scene = write_shapes_scene(raster, 768, block=256, min_object_size=17, max_object_size=64, max_objects=10,
                               vectors=vectors, single_class=True, seed=3)
    return scene, raster, vectors


def test_a_rasters_boxes_are_measured_once_and_whole(crowns):
    from retina_plugin.geo.dataset import register_raster_dataset

    scene, raster, vectors = crowns
    # Tiles of 192 px sharing half: most objects lie whole in two to four tiles, and many are cut by a tile edge.
    register_raster_dataset("crowns_192", raster, vectors, tile_size=192, overlap=0.5)
    sizes = load_box_sizes(analysis_cfg(), "crowns_192", tiled=True)
    widths, heights = scene.boxes[:, 2] - scene.boxes[:, 0], scene.boxes[:, 3] - scene.boxes[:, 1]
    assert sizes.num_boxes == len(scene.boxes)
    order, expected = np.lexsort((sizes.heights, sizes.widths)), np.lexsort((heights, widths))
    assert np.allclose(sizes.widths[order], widths[expected], atol=0.01)
    assert np.allclose(sizes.heights[order], heights[expected], atol=0.01)


def test_tool_writes_a_config_for_a_geotiff_and_its_vectors_that_trains(crowns, tmp_path):
    scene, raster, vectors = crowns
    raster_flags = ["--train-raster", raster, "--train-vectors", vectors]
    written = tmp_path / "aerial.yaml"
    args = ["--config-file", NARROW_CONFIG, *raster_flags, "--write-config", str(written), "--percentile", "100",
            "--output", str(tmp_path / "out")]
    result = run_tool("tools/analyze_anchors.py", *args, timeout=300)
    # By construction: the scene's own boxes, each once.
    sides = np.maximum(scene.boxes[:, 2] - scene.boxes[:, 0], scene.boxes[:, 3] - scene.boxes[:, 1])
    expected = propose_tiles(BoxSizes("scene", sides, sides, np.zeros((1, 2))), 32, percentile=100).values
    assert f"{len(scene.boxes)} boxes of raster_train_crowns" in result.stdout
    cfg = load_config(str(written))
    tile, overlap = cfg.MODEL.RETINA_PLUGIN.TILE_SIZE, cfg.MODEL.RETINA_PLUGIN.TILE_OVERLAP
    assert (tile, overlap) == (expected["MODEL.RETINA_PLUGIN.TILE_SIZE"], expected["MODEL.RETINA_PLUGIN.TILE_OVERLAP"])
    assert shared_pixels(tile, overlap) >= sides.max() + 2 * EDGE_MARGIN and tile >= 4 * sides.max()
    assert (tuple(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST) == ((tile,), tile, 0)
    report = _anchor_coverage(tmp_path / "out")
    suggested = report["suggested"]["anchors"]
    assert AnchorSetting.from_config(cfg).to_dict() == {key: suggested[key] for key in ("SIZES", "ASPECT_RATIOS")}
    # The anchors reach every box's size (IoU >= 0.5 with a square anchor of its area) and cover more boxes of the tiles.
    areas = np.sqrt((scene.boxes[:, 2] - scene.boxes[:, 0]) * (scene.boxes[:, 3] - scene.boxes[:, 1]))
    anchor_sizes = np.array(suggested["SIZES"])
    assert anchor_sizes.min() * math.sqrt(0.5) <= areas.min() and areas.max() <= anchor_sizes.max() / math.sqrt(0.5)
    assert report["suggested"]["all"]["coverage"] > 0.95 > report["current"]["all"]["coverage"]
    assert yaml.safe_load(written.read_text())["_BASE_"].endswith("scenes_narrow_R50_cpu.yaml")
    # The file is kept unless --force.
    again = run_tool("tools/analyze_anchors.py", *args, check=False, timeout=300)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
        f"analyze_anchors: error: --write-config {written} exists; pass --force to replace it")
    # It trains on the raster with the same flags.
    run_tool("tools/train_net.py", "--config-file", str(written), *raster_flags, "SOLVER.MAX_ITER", "2",
             "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(tmp_path / "run"), timeout=300)
    assert (tmp_path / "run" / "model_final.pth").is_file()


def test_tool_proposes_input_sizes_for_a_coco_json(tmp_path):
    rng = np.random.default_rng(0)
    images = [(256, 256, [[*rng.uniform(0, 230, 2), s, s] for s in rng.uniform(8, 16, 5)]) for _ in range(20)]
    json_path, image_dir = write_coco(str(tmp_path), "small_boxes", images)
    written = tmp_path / "small.yaml"
    result = run_tool("tools/analyze_anchors.py", "--config-file", BASE_CONFIG, "--train-json", json_path,
                      "--train-images", image_dir, "--write-config", str(written), "--output", str(tmp_path / "out"),
                      *SMALL_OPTS, "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "512", timeout=300)
    assert "Settings from the data" in result.stdout
    cfg = load_config(str(written))
    # The options given are written too; the images are seen at their own 256 px, the boxes 8-16 px.
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RETINA_PLUGIN.TILE_SIZE == 0
    p1 = np.percentile([b[2] for _, _, boxes in images for b in boxes], 1)
    size = cfg.INPUT.MIN_SIZE_TEST
    assert size % 32 == 0 and p1 * size / 256 >= 32 * math.sqrt(0.5) > p1 * (size - 32) / 256
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (size,) and cfg.INPUT.MAX_SIZE_TEST == cfg.INPUT.MAX_SIZE_TRAIN == 2 * size
    report = _anchor_coverage(tmp_path / "out")
    assert report["resize"]["short_edge"] == size  # the coverage is measured at the proposed size
    assert report["settings_from_the_data"]["values"]["INPUT.MIN_SIZE_TEST"] == size


def test_bad_settings_input_is_one_line(datasets, tmp_path, capsys):
    from retina_plugin.cli.analyze_anchors import main

    json_path, image_dir = datasets["elongated"]
    base = ["--config-file", BASE_CONFIG, "--train-json", json_path, "--train-images", image_dir, *SMALL_OPTS]
    (tmp_path / "taken.yaml").write_text("# mine\n")
    cases = [
        (["--propose-settings", "--percentile", "40"], "--percentile 40 must be in (50, 100]"),
        (["--write-config", str(tmp_path / "taken.yaml")], f"--write-config {tmp_path / 'taken.yaml'} exists; pass --force"),
        (["--write-config", BASE_CONFIG, "--force", "--output", str(tmp_path)],
         f"{BASE_CONFIG}: it is the config it would inherit (_BASE_); write another file"),
    ]
    for flags, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(base + flags)
        assert exit_info.value.code == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("analyze_anchors: error: ") and message in err and err.count("\n") == 1, (flags, err)
    assert (tmp_path / "taken.yaml").read_text() == "# mine\n"
