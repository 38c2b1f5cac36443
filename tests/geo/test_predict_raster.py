"""
tools/predict_raster.py and retina_plugin/geo/predict.py on generated GeoTIFFs (EPSG:32633,
0.1 m pixels, a nodata frame) with the tiny detector of tests/tiny_detector.py: polygons are
the pixel boxes through the raster's transform, the CRS is kept, all-nodata windows are not
run, the windowed run equals tiled inference on the raster loaded whole, bands are chosen and
ordered as asked, and bad input is one line naming the file or value.
"""
import json
import re
import runpy
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from detectron2.structures import Boxes, pairwise_iou

from retina_plugin.cli.predict_raster import raster_config
from retina_plugin.geo.predict import RasterPredictor, predict_rasters
from retina_plugin.errors import InputFileError
from retina_plugin.data.raster import RasterError, RasterSource
from retina_plugin.geo.scenes import SCENE_CRS, write_shapes_scene
from retina_plugin.geo.vectors import boxes_to_polygons
from retina_plugin.inference.tiles import tile_grid
from tool_runs import REPO, logging_restored, run_tool

PREDICT_RASTER_MAIN = runpy.run_path(str(REPO / "tools" / "predict_raster.py"))["main"]

SIZE, BORDER, TILE, OVERLAP = 1280, 256, 128, 0.25
SCORE = 0.5


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("raster")
    return write_shapes_scene(str(root / "scene.tif"), SIZE, border=BORDER, seed=5, single_class=True)


def config(trained, *opts):
    cfg, _ = raster_config(
        trained.config_file, ["MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", SCORE, *opts],
        tile=TILE, overlap=OVERLAP,
    )  # fmt: skip
    return cfg


def nodata_windows(size, border):
    """How many windows of the grid lie wholly in the nodata frame (known by construction)."""
    tiles = tile_grid(size, size, TILE, OVERLAP)
    inside = lambda lo, hi: (hi <= border) | (lo >= size - border)  # noqa: E731
    return int((inside(tiles[:, 0], tiles[:, 2]) | inside(tiles[:, 1], tiles[:, 3])).sum())


def test_predict_raster_writes_polygons_in_the_rasters_crs(trained, scene, tmp_path, single_thread):
    out, coco = tmp_path / "dets.gpkg", tmp_path / "dets.json"
    proc = run_tool(
        "tools/predict_raster.py", "--config-file", trained.config_file, "--input", scene.path,
        "--output", str(out), "--tile", str(TILE), "--overlap", str(OVERLAP), "--classes", "shape",
        "--coco-json", str(coco), "--opts", "MODEL.WEIGHTS", trained.weights, "MODEL.RETINANET.SCORE_THRESH_TEST", str(SCORE),
    )  # fmt: skip
    skipped = nodata_windows(SIZE, BORDER)
    total = len(tile_grid(SIZE, SIZE, TILE, OVERLAP))
    assert 0 < skipped < total
    assert f"ran {total - skipped} of {total} windows ({skipped} all nodata)" in proc.stdout
    assert f"{total}/{total}" in proc.stderr  # the progress bar reached the end

    frame = gpd.read_file(out)
    assert frame.crs == rasterio.crs.CRS.from_string(SCENE_CRS)
    assert list(frame.columns) == ["score", "label", "class_id", "source", "geometry"]
    assert set(frame.label) == {"shape"} and set(frame.source) == {scene.path}
    results = json.loads(coco.read_text())
    assert len(results) == len(frame) > 100  # more than one window's cap: the raster has none
    pixel = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in results)])
    # Polygon corners are the pixel boxes through the affine transform: x = 500000 + 0.1 col, y = 5400000 - 0.1 row.
    corners = shapely.get_coordinates(frame.geometry.values).reshape(-1, 5, 2)[:, :4]
    expected = np.stack(
        [500000 + 0.1 * pixel[:, [0, 2, 2, 0]], 5400000 - 0.1 * pixel[:, [1, 1, 3, 3]]], axis=2
    )
    np.testing.assert_allclose(corners, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(frame.score.values, [r["score"] for r in results], rtol=1e-6)

    # It finds the objects: recall at IoU 0.5 of the generated boxes, the tiny detector's bar in
    # tests/inference/test_tiling.py (an untrained model finds none).
    iou = pairwise_iou(Boxes(torch.as_tensor(scene.boxes).float()), Boxes(torch.as_tensor(pixel).float()))
    recall = (iou.max(1).values >= 0.5).float().mean().item()
    print(f"\n{len(scene.boxes)} objects, {len(frame)} detections, recall@0.5 {recall:.3f}")
    assert recall >= 0.7


def test_windowed_prediction_equals_tiled_inference_on_the_raster_loaded_whole(trained, scene, single_thread):
    cfg = config(trained)
    predictor = RasterPredictor(cfg)
    windowed = predictor.predict(scene.path, progress=False)
    assert windowed.windows_skipped == nodata_windows(SIZE, BORDER)
    with rasterio.open(scene.path) as src:
        rgb = src.read()
    whole = predictor(np.ascontiguousarray(rgb[::-1].transpose(1, 2, 0)))["instances"]  # BGR, as OpenCV reads
    np.testing.assert_allclose(windowed.boxes, whole.pred_boxes.tensor.numpy(), atol=1e-4)
    np.testing.assert_allclose(windowed.scores, whole.scores.numpy(), atol=1e-5)


def test_bands_are_chosen_and_ordered_as_asked(trained, scene, tmp_path, single_thread):
    """A 4-band raster (NIR, R, G, B) read with --bands 2,3,4 gives the 3-band raster's detections."""
    with rasterio.open(scene.path) as src:
        profile, rgb = src.profile, src.read()
    path = tmp_path / "nir_first.tif"
    profile.update(count=4)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.concatenate([255 - rgb[1:2], rgb]))
    cfg = config(trained)
    reference = RasterPredictor(cfg).predict(scene.path, progress=False)
    chosen = RasterPredictor(config(trained, "MODEL.RETINA_PLUGIN.RASTER_BANDS", [2, 3, 4])).predict(str(path), progress=False)
    np.testing.assert_array_equal(chosen.boxes, reference.boxes)
    with RasterPredictor(cfg).open(str(path)) as source:  # without RASTER_BANDS: the first len(PIXEL_MEAN)
        assert source.bands == [1, 2, 3] and source.channel_order == [3, 2, 1]
    with pytest.raises(RasterError, match=r"nir_first.tif: 4 band\(s\) chosen \(1,2,3,4\) but the model takes 3 channels"):
        RasterSource(str(path), [1, 2, 3, 4], num_channels=3)


def test_four_band_model_round_trip(trained, scene, tmp_path, single_thread):
    """
    A 4-channel model loaded from the 3-channel weights (4th stem channel from the RGB filters'
    mean) on a 4-band raster whose 4th band equals its PIXEL_MEAN (0 after normalisation)
    detects what the 3-channel model detects on the RGB bands, written as the same polygons.
    """
    with rasterio.open(scene.path) as src:
        profile, rgb = src.profile, src.read()
    path = tmp_path / "rgbn.tif"
    profile.update(count=4)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.concatenate([rgb, np.full_like(rgb[:1], 100)]))
    mean, std = list(trained.cfg.MODEL.PIXEL_MEAN), list(trained.cfg.MODEL.PIXEL_STD)
    cfg4 = config(trained, "MODEL.PIXEL_MEAN", mean + [100.0], "MODEL.PIXEL_STD", std + [50.0])
    out3, out4 = tmp_path / "rgb.geojson", tmp_path / "rgbn.geojson"
    three = predict_rasters(config(trained), [scene.path], str(out3), progress=False)[0]
    four = predict_rasters(cfg4, [str(path)], str(out4), progress=False)[0]
    assert len(four.boxes) == len(three.boxes) > 0
    np.testing.assert_allclose(four.boxes, three.boxes, atol=1e-3)
    np.testing.assert_allclose(four.scores, three.scores, atol=1e-4)
    polygons = gpd.read_file(out4).geometry.values
    expected = boxes_to_polygons(four.boxes, scene.transform)
    assert all(p.equals_exact(e, 1e-6) for p, e in zip(polygons, expected))


def test_raster_without_crs_gives_pixel_coordinates_and_a_warning(trained, tmp_path, caplog, single_thread):
    plain = write_shapes_scene(str(tmp_path / "plain.tif"), 256, crs=None, seed=2, single_class=True)
    out = tmp_path / "plain.gpkg"
    with caplog.at_level("WARNING"):
        d = predict_rasters(config(trained), [plain.path], str(out), progress=False)[0]
    assert "plain.tif: the raster has no CRS; detections are written in pixel coordinates" in caplog.text
    frame = gpd.read_file(out)
    assert frame.crs is None and len(frame) == len(d.boxes) > 0
    bounds = frame.geometry.bounds.values
    np.testing.assert_allclose(bounds, d.boxes, atol=1e-4)  # pixel boxes as they are


@pytest.mark.parametrize(
    "case, expected",
    [
        ("band", r"predict_raster: error: .*scene4\.tif: band 5 out of range: the raster has 4 band\(s\), 1\.\.4"),
        ("unreadable", r"predict_raster: error: .*broken\.tif: cannot read raster: "),
        ("missing", r"predict_raster: error: .*nothere\.tif: no such raster file or folder"),
        ("bands_text", r"predict_raster: error: --bands '1,x': expected 1-based band indices"),
        ("output", r"predict_raster: error: .*dets\.csv: unknown vector format '\.csv'"),
        # its header reads, its blocks half do not (GDAL's own reason follows)
        ("truncated", r"predict_raster: error: .*truncated\.tif: cannot read the window x \d+\.\.\d+, y \d+\.\.\d+: \S"),
        ("classes", r"predict_raster: error: --classes names 2 class\(es\) \['shape', 'tree'\] but the model has 1 "),
    ],
)
def test_bad_input_is_one_line_naming_it(trained, tmp_path, case, expected, capsys):
    scene4 = write_shapes_scene(str(tmp_path / "scene4.tif"), 128, bands=4)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not a tiff at all")
    if case == "truncated":
        whole = Path(write_shapes_scene(str(tmp_path / "whole.tif"), 1024, seed=3).path).read_bytes()
        (tmp_path / "truncated.tif").write_bytes(whole[: len(whole) // 2])
    inputs = {"unreadable": str(tmp_path / "broken.tif"), "missing": str(tmp_path / "nothere.tif"),
              "truncated": str(tmp_path / "truncated.tif")}.get(case, scene4.path)  # fmt: skip
    bands = {"band": "1,2,5", "bands_text": "1,x"}.get(case, "1,2,3")
    output = str(tmp_path / ("dets.csv" if case == "output" else "dets.gpkg"))
    argv = [
        "--config-file", trained.config_file, "--input", inputs, "--output", output,
        "--bands", bands, "--no-progress", "MODEL.WEIGHTS", trained.weights,
    ] + (["--classes", "shape,tree"] if case == "classes" else [])  # fmt: skip
    if case == "band":  # one of them as a user runs it, in its own process
        proc = run_tool("tools/predict_raster.py", *argv, check=False)
        code, err = proc.returncode, proc.stderr
        assert "Traceback" not in err
    else:  # the others through the tool's main, in this process (a subprocess costs ~6 s of imports)
        with pytest.raises(SystemExit) as e, logging_restored("fvcore", "retina_plugin", "predict_raster"):
            PREDICT_RASTER_MAIN(argv)
        code, err = e.value.code, capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(expected + ".*", last), err[-2000:]


def test_raster_source_reads_windows_in_bgr_order_and_skips_nodata(tmp_path):
    scene = write_shapes_scene(str(tmp_path / "s.tif"), 256, bands=4, border=64, seed=3)
    with rasterio.open(scene.path) as src:
        bands = src.read()
    with RasterSource(scene.path, num_channels=4, input_format="BGR") as source:
        assert source.channel_order == [3, 2, 1, 4]
        window = source.read(60, 70, 200, 180)
        np.testing.assert_array_equal(window, bands[[2, 1, 0, 3], 70:180, 60:200])
        assert source.read(0, 0, 64, 64) is None  # all nodata
        assert source.read(0, 0, 65, 65) is not None  # one pixel of data
    image = cv2.cvtColor(np.ascontiguousarray(bands[:3].transpose(1, 2, 0)), cv2.COLOR_RGB2BGR)
    with RasterSource(scene.path, bands=[1, 2, 3], input_format="BGR") as source:
        np.testing.assert_array_equal(source.read(0, 0, 256, 256).transpose(1, 2, 0), image)


def test_per_class_thresholds_file_of_analyze_results(trained, scene, tmp_path, single_thread):
    """--confidence-threshold takes analyze_results' thresholds.yaml, for the names of --classes."""
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("shape: 0.9\n")
    cfg, per_class = raster_config(
        trained.config_file, ["MODEL.WEIGHTS", trained.weights], str(thresholds), tile=TILE, overlap=OVERLAP, class_names=["shape"]
    )  # fmt: skip
    assert per_class == [0.9] and cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.9
    high = RasterPredictor(cfg, per_class).predict(scene.path, progress=False)
    low = RasterPredictor(config(trained)).predict(scene.path, progress=False)
    assert len(high.scores) and (high.scores >= 0.9).all()
    assert len(high.scores) == (low.scores >= 0.9).sum() < len(low.scores)
    with pytest.raises(InputFileError, match=r"thresholds.yaml: 'tree' is not a class of the model \(classes: shape\)"):
        thresholds.write_text("tree: 0.5\n")
        raster_config(trained.config_file, [], str(thresholds), class_names=["shape"])


def test_inputs_are_files_and_the_rasters_of_folders(tmp_path):
    from retina_plugin.data.raster import resolve_raster_inputs

    folder = tmp_path / "tiles"
    folder.mkdir()
    for name in ("b.tif", "a.TIFF", "notes.txt"):
        (folder / name).write_bytes(b"")
    single = tmp_path / "c.vrt"
    single.write_bytes(b"")
    assert resolve_raster_inputs([str(folder), str(single)]) == [str(folder / "a.TIFF"), str(folder / "b.tif"), str(single)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(RasterError, match=r"empty: folder holds no raster \(\.tif, \.tiff"):
        resolve_raster_inputs([str(tmp_path / "empty")])
