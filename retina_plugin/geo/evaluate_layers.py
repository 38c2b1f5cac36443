"""
The two vector layers tools/evaluate_raster.py scores (detections, as tools/predict_raster.py
writes them, and ground-truth map features), read, checked and cut per raster into the
`RasterTruth` that geo.evaluate scores.

A raster's ground truth is the ground-truth features inside its footprint, reprojected to its
CRS and clipped to it; its detections are the predictions naming it in their `source` column
(all predictions when there is one raster), clipped the same way. Their labels are kept when
both layers have a `label` column (matching within a class), else all are AGNOSTIC_LABEL. With
`rotated` (a rotated model's turned rectangles), every polygon is its minimum-area rotated
rectangle in pixels (XYWHA, geo.rotated_rectangles), else its axis-aligned pixel bounds.
"""
import os
from typing import List, Optional, Sequence

import numpy as np
import shapely
from affine import Affine

from ..data.raster import RasterError, RasterSource
from .evaluate import RasterTruth
from .rotated_rectangles import polygons_to_rotated_boxes
from .vectors import VectorError, boxes_to_polygons, polygons_to_boxes, read_vectors

__all__ = ["AGNOSTIC_LABEL", "load_predictions", "load_ground_truth", "check_label_sets", "raster_paths", "raster_truth"]

AGNOSTIC_LABEL = "object"  # the one class of a class-agnostic evaluation
POLYGON_TYPES = ("Polygon", "MultiPolygon")


def _check_polygons(frame, path: str):
    bad = ~frame.geom_type.isin(POLYGON_TYPES)
    if bad.any():
        kinds = ", ".join(sorted(set(frame.geom_type[bad])))
        raise VectorError(f"{path}: {int(bad.sum())} feature(s) are {kinds}, not polygons")


def load_predictions(path: str, score_threshold: float = 0.0):
    """The detection layer (`score` >= `score_threshold`) and its label column (None: none)."""
    frame, label = read_vectors(path)
    if "score" not in frame.columns:
        raise VectorError(f"{path}: no 'score' column (columns: {', '.join(map(str, frame.columns))})")
    _check_polygons(frame, path)
    return frame[frame["score"].astype(float) >= score_threshold], label


def load_ground_truth(path: str):
    """The ground-truth polygons and their label column (None: class-agnostic)."""
    frame, label = read_vectors(path)
    _check_polygons(frame, path)
    return frame, label


def check_label_sets(predictions, pred_label, predictions_path: str, ground_truth, gt_label, gt_path: str) -> None:
    """
    Matching within label needs labels both layers share: detections labelled `0` against ground
    truth labelled `Tree` would count no true positive at all. Two label sets with nothing in
    common raise a VectorError naming both (--class-agnostic matches without labels).
    """
    if pred_label is None or gt_label is None or len(predictions) == 0 or len(ground_truth) == 0:
        return
    detected = sorted(set(predictions[pred_label].astype(str)))
    truth = sorted(set(ground_truth[gt_label].astype(str)))
    if not set(detected) & set(truth):
        def some(names):
            return ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")

        raise VectorError(
            f"{predictions_path}: its labels ({some(detected)}) share none with those of {gt_path} ({some(truth)}): "
            f"no detection could match; label the detections with the model's class names (predict_raster --classes), "
            f"or match without labels (--class-agnostic)"
        )


def _resolve_source(source: str, predictions_path: str) -> Optional[str]:
    for candidate in (source, os.path.join(os.path.dirname(os.path.abspath(predictions_path)), source)):
        if os.path.isfile(candidate):
            return candidate
    return None


def raster_paths(predictions, predictions_path: str, rasters: Optional[Sequence[str]]) -> List[str]:
    """`rasters`, else the files the predictions' `source` column names (each must exist)."""
    if rasters:
        return list(rasters)
    if "source" not in predictions.columns or predictions["source"].isna().all():
        raise VectorError(f"{predictions_path}: no 'source' column naming the raster; pass --raster FILE")
    paths = []
    for source in sorted(set(predictions["source"].dropna().astype(str))):
        found = _resolve_source(source, predictions_path)
        if found is None:
            raise RasterError(f"{predictions_path}: its source raster {source} not found; pass --raster FILE")
        paths.append(found)
    return paths


def _same_file(source: str, raster: str, predictions_path: str) -> bool:
    found = _resolve_source(source, predictions_path)
    if found is not None and os.path.realpath(found) == os.path.realpath(raster):
        return True
    return os.path.basename(source) == os.path.basename(raster)


def _inside(frame, footprint, crs):
    """The features of `frame` in `crs`, clipped to `footprint`; those with no area inside dropped."""
    if crs is not None and frame.crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    frame = frame[frame.intersects(footprint)].copy()
    frame = frame.set_geometry(shapely.intersection(frame.geometry.values, footprint))
    return frame[frame.geometry.area > 0]


def raster_truth(
    raster: str, predictions, pred_label, predictions_path: str, ground_truth, gt_label, gt_path: str, split_by_source: bool,
    rotated: bool = False,
) -> RasterTruth:
    """
    One raster's ground truth and detections (see the module's docstring): the layers, their
    label columns and files; `split_by_source`: keep the predictions whose `source` names it;
    `rotated`: XYWHA boxes (minimum-area rectangles), else axis-aligned pixel bounds.
    Raises a VectorError when no ground-truth feature is inside the raster.
    """
    with RasterSource(raster) as source:
        width, height, crs = source.width, source.height, source.crs
        transform = source.transform if crs is not None else Affine.identity()  # pixel-space detections
    footprint = boxes_to_polygons([[0, 0, width, height]], transform)[0]
    if split_by_source:
        predictions = predictions[[_same_file(str(s), raster, predictions_path) for s in predictions["source"]]]
    gt = _inside(ground_truth, footprint, crs)
    if len(gt) == 0:
        def extent(bounds):
            return ", ".join(f"{v:.10g}" for v in bounds)

        raise VectorError(
            f"{gt_path}: no ground-truth feature inside {raster} (raster bounds {extent(footprint.bounds)} in {crs}; "
            f"ground truth bounds {extent(ground_truth.total_bounds)} in {ground_truth.crs})"
        )
    dets = _inside(predictions, footprint, crs)
    class_aware = pred_label is not None and gt_label is not None

    def labels(frame, column):
        return np.asarray(frame[column].astype(str) if class_aware else [AGNOSTIC_LABEL] * len(frame), dtype=object)

    boxes = polygons_to_rotated_boxes if rotated else polygons_to_boxes
    return RasterTruth(
        raster, width, height, None if crs is None else crs.to_string(),
        boxes(gt.geometry.values, transform), labels(gt, gt_label),
        boxes(dets.geometry.values, transform), dets["score"].astype(float).to_numpy(),
        labels(dets, pred_label),
    )  # fmt: skip
