"""
evaluate_raster's PNG on small generated rasters: the legend in a strip below the raster, never
over its boxes; nodata black only where every band is nodata (GDAL's per-dataset reading),
and black where the raster's own mask or alpha band says so; a raster shown shrunk more than
twice gets its worst window enlarged below.
"""
import cv2
import numpy as np
import rasterio
from affine import Affine

from retina_plugin.geo.evaluate import RasterTruth, match_raster
from retina_plugin.geo.evaluate_plot import COLOURS, display_image, plot_evaluation

SIZE = 200
BACKGROUND = (100, 120, 140)


def write_raster(path, bands: np.ndarray, nodata=None, mask=None) -> str:
    """A GeoTIFF of `bands` (C, H, W) uint8, with a nodata value and / or an internal mask (H, W) bool."""
    profile = dict(driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=bands.shape[0], dtype="uint8",
                   crs="EPSG:32633", transform=Affine(0.1, 0, 500000, 0, -0.1, 4000000), nodata=nodata)  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        if mask is not None:
            dst.write_mask(mask.astype(np.uint8) * 255)
    return str(path)


def flat_bands(size=SIZE) -> np.ndarray:
    return np.array(BACKGROUND, np.uint8)[:, None, None].repeat(size, 1).repeat(size, 2)


def test_legend_is_a_strip_below_the_raster(tmp_path):
    path = write_raster(tmp_path / "small.tif", flat_bands())
    boxes = np.array([[4, 4, 60, 24], [120, 150, 180, 190]], np.float64)  # the first where a legend line would start
    labels = np.array(["a", "a"], object)
    truth = RasterTruth(path, SIZE, SIZE, "EPSG:32633", boxes, labels, boxes[:1], np.ones(1), labels[:1])
    (det_tp, gt_matched), = match_raster(truth, [0.5])
    picture = cv2.imread(plot_evaluation(truth, det_tp, gt_matched, 0.5, str(tmp_path / "small.png")))[:, :, ::-1]
    assert picture.shape[1] == SIZE and picture.shape[0] > SIZE
    raster, legend = picture[:SIZE], picture[SIZE:]
    changed = (raster != display_image(path)[0]).any(axis=2)
    on_boxes = np.zeros_like(changed)
    for colour in COLOURS.values():
        on_boxes |= (raster == colour).all(axis=2)
    assert changed.sum() > 0 and (changed == on_boxes).all()  # only box outlines differ from the raster
    assert (raster[4, 4:60] == COLOURS["TP"]).all() and (raster[150, 120:180] == COLOURS["missed"]).all()
    words = legend.any(axis=2)
    assert 0.01 < words.mean() < 0.5  # coloured words on black
    for colour in COLOURS.values():  # each count in its colour (anti-aliased: near it)
        assert (np.abs(legend.astype(int) - colour).max(axis=2) < 60).sum() > 10


def test_nodata_is_black_only_where_every_band_is_nodata(tmp_path):
    nodata = 200
    bands = flat_bands()
    bands[:, :50, :50] = nodata  # every band: no data
    bands[0, 100:150, 100:150] = nodata  # red only: a red of 200 that is data
    bands[1, 150:, :50] = nodata  # green only
    image, scale = display_image(write_raster(tmp_path / "nodata.tif", bands, nodata=nodata))
    assert scale == 1.0
    assert (image[:50, :50] == 0).all()
    assert (image[100:150, 100:150] == (nodata, *BACKGROUND[1:])).all()
    assert (image[150:, :50] == (BACKGROUND[0], nodata, BACKGROUND[2])).all()
    assert (image[60:100, 60:100] == BACKGROUND).all()


def test_a_mask_makes_its_pixels_black(tmp_path):
    mask = np.ones((SIZE, SIZE), bool)
    mask[:, 150:] = False
    image, _ = display_image(write_raster(tmp_path / "masked.tif", flat_bands(), mask=mask))
    assert (image[:, 150:] == 0).all() and (image[:, :150] == BACKGROUND).all()
    with rasterio.open(tmp_path / "masked.tif") as src:
        assert src.nodata is None and src.count == 3  # the mask is GDAL's internal mask, not a band


def test_an_alpha_band_makes_its_pixels_black(tmp_path):
    alpha = np.full((1, SIZE, SIZE), 255, np.uint8)
    alpha[0, 150:] = 0
    path = tmp_path / "rgba.tif"
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint8", photometric="RGB",
                       alpha="YES", crs="EPSG:32633", transform=Affine(0.1, 0, 500000, 0, -0.1, 4000000)) as dst:  # fmt: skip
        dst.write(np.concatenate([flat_bands(), alpha]))
    image, _ = display_image(str(path))
    assert (image[150:] == 0).all() and (image[:150] == BACKGROUND).all()


def test_a_shrunk_raster_has_its_worst_window_enlarged_below(tmp_path):
    """900 objects of 20 px on a 1200 px raster shown at 400 px; the errors are all in the bottom-right corner."""
    size, view = 1200, 400
    path = write_raster(tmp_path / "dense.tif", flat_bands(size))
    xy = 10 + 40 * np.stack(np.meshgrid(np.arange(30), np.arange(30)), -1).reshape(-1, 2).astype(np.float64)
    gt = np.concatenate([xy, xy + 20], 1)
    in_corner = (xy >= 900).all(axis=1)
    det = gt + np.where(in_corner, 12, 0)[:, None] * np.array([1, 0, 1, 0])  # shifted: IoU 0.25, an FP and a miss
    labels = np.array(["a"] * len(gt), object)
    truth = RasterTruth(path, size, size, "EPSG:32633", gt, labels, det, np.ones(len(det)), labels)
    det_tp = gt_matched = ~in_corner  # 7 x 7 objects in the corner (match_raster's COCOeval takes 20 s on 900)
    picture = cv2.imread(plot_evaluation(truth, det_tp, gt_matched, 0.5, str(tmp_path / "dense.png"), view))[:, :, ::-1]
    assert picture.shape[1] == view and picture.shape[0] > 2 * view
    whole, zoomed = picture[:view], picture[view : 2 * view]
    outline = (whole == (255, 255, 255)).all(axis=2)
    ys, xs = np.nonzero(outline)
    assert outline.sum() > 100 and xs.min() >= 900 / 3 - 20 and ys.min() >= 900 / 3 - 20  # around the corner
    red, yellow = ((zoomed == COLOURS[k]).all(axis=2).sum() for k in ("FP", "missed"))
    assert red > 2000 and yellow > 2000  # the corner's errors at twice the raster's resolution
    assert (zoomed == BACKGROUND).all(axis=2).mean() > 0.5
