"""
analyze_results' worst/ pictures on a dense scene: 324 objects on a 1024 px grey image, at
known places, with the errors gathered in one corner; and on the sparse hand-built case.
Label text is measured by its dark box (Detectron2's draw_text paints a black box at alpha 0.8):
the grey background and the box colours have no pixel that dark.
"""
import cv2
import numpy as np
import pytest

from retina_plugin.analysis.detections import analyse_results, detections_from_list, ground_truth_from_coco
from retina_plugin.analysis.detections.worst_images import COLORS, WINDOW_COLOR, write_worst_images
from retina_plugin.inference.dense_drawing import busiest_window, labels_fit
from test_results_case import coco_gt, coco_results, write_case

SIZE, GRID, STEP, SIDE, GREY = 1024, 18, 56, 30, 150
CORNER = (768, 0, 1024, 256)  # x0, y0, x1, y1: the errors are all here


def dark_share(rgb: np.ndarray) -> float:
    """The share of pixels darker than anything but a label's box (every channel below 60)."""
    return float((rgb < 60).all(axis=2).mean())


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """(picture of the worst image, number of objects): 324 objects, 3 classes; in CORNER each one is shifted (a loc error and a miss)."""
    root = tmp_path_factory.mktemp("dense")
    cv2.imwrite(str(root / "dense.png"), np.full((SIZE, SIZE, 3), GREY, np.uint8))
    xy = 20 + STEP * np.stack(np.meshgrid(np.arange(GRID), np.arange(GRID)), -1).reshape(-1, 2)
    anns = [{"id": n + 1, "image_id": 1, "category_id": n % 3 + 1, "bbox": [int(x), int(y), SIDE, SIDE], "area": SIDE * SIDE,
             "iscrowd": 0} for n, (x, y) in enumerate(xy)]  # fmt: skip
    coco = {"images": [{"id": 1, "file_name": str(root / "dense.png"), "height": SIZE, "width": SIZE}], "annotations": anns,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(["circle", "square", "triangle"])]}  # fmt: skip
    in_corner = lambda x, y: CORNER[0] <= x + SIDE / 2 < CORNER[2] and CORNER[1] <= y + SIDE / 2 < CORNER[3]  # noqa: E731
    results = [{"image_id": 1, "category_id": a["category_id"], "score": 0.95 if in_corner(*a["bbox"][:2]) else 0.9,
                "bbox": [a["bbox"][0] + (20 if in_corner(*a["bbox"][:2]) else 0), *a["bbox"][1:]]} for a in anns]  # fmt: skip
    gt = ground_truth_from_coco(coco)
    analysis = analyse_results(gt, detections_from_list(results, gt))
    (path,) = write_worst_images(analysis, str(root / "worst"), 1)
    return cv2.imread(path)[:, :, ::-1], len(anns)


def test_dense_image_labels_cover_under_5_percent(dense):
    picture, num = dense
    assert num > 300
    whole = picture[:SIZE]
    assert dark_share(whole) < 0.05  # all 324 labels at that font would cover about half of it
    # every box is still drawn: a true positive's top edge in green, a shifted one's in red
    x, y = 20, 20
    assert (np.abs(whole[y, x + 5 : x + SIDE - 5].astype(int) - np.array(COLORS["true positive"]) * 255).max() < 40)
    x, y = 20 + STEP * 17 + 20, 20
    assert (np.abs(whole[y, x + 5 : x + SIDE - 5].astype(int) - np.array(COLORS["false positive"]) * 255).max() < 40)


def test_dense_image_has_its_worst_window_enlarged_below(dense):
    picture, _ = dense
    yellow = (np.abs(picture[:SIZE].astype(int) - np.array(WINDOW_COLOR) * 255).max(axis=2) < 30)
    ys, xs = np.nonzero(yellow)
    assert yellow.sum() > 500  # the window's outline on the whole view, around the corner of errors
    assert CORNER[0] - 60 <= xs.min() and ys.max() <= CORNER[3] + 60
    zoomed = picture[SIZE : 2 * SIZE]
    assert picture.shape[0] > 2 * SIZE and picture.shape[1] == SIZE
    assert 0.002 < dark_share(zoomed) < 0.08  # the window's boxes are labelled


def test_sparse_image_keeps_its_labels_and_legend_below(tmp_path):
    write_case(str(tmp_path))
    gt = ground_truth_from_coco(coco_gt(str(tmp_path / "images")))
    analysis = analyse_results(gt, detections_from_list(coco_results(), gt))
    path = write_worst_images(analysis, str(tmp_path / "worst"), 1)[0]
    picture = cv2.imread(path)[:, :, ::-1]
    assert picture.shape[1] == 512 and 512 < picture.shape[0] < 2 * 512  # no enlarged window
    legend = picture[512:]
    assert (legend == 255).all(axis=2).mean() > 0.5 and dark_share(legend) > 0.01


def test_busiest_window_holds_the_most_points():
    points = np.array([[10, 10], [900, 100], [910, 120], [950, 60], [500, 500]])
    assert busiest_window(points, 1024, 1024, 256) == (768, 0, 1024, 256)
    assert busiest_window(points, 1024, 1024, 4096) == (0, 0, 1024, 1024)  # cut to the image
    assert busiest_window(np.zeros((0, 2)), 600, 800, 200) == (0, 0, 200, 200)


def test_labels_fit_up_to_the_share_of_the_image():
    label = "circle 0.95"  # 1.2 * 12 * 10^2 = 1440 px at font 10
    assert labels_fit([label] * 58, 10, 1024, 1024)  # 58 * 1440 < 0.08 * 1024^2 = 83886
    assert not labels_fit([label] * 59, 10, 1024, 1024)
    assert labels_fit([label] * 14, 10, 512, 512) and not labels_fit([label] * 15, 10, 512, 512)
