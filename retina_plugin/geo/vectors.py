"""
Detections as map features, and map features as pixel boxes.

A detection layer (what `tools/predict_raster.py` writes) has one feature per detection: the
box as a polygon in the raster's CRS (its four corners mapped through the raster's affine
transform) and the columns `score`, `label` (class name), `class_id` (contiguous, 0-based)
and `source` (the raster file). The writer follows the file ending: .gpkg (GeoPackage),
.geojson / .json (GeoJSON), .shp (Shapefile), .parquet (GeoParquet, through geopandas and
pyarrow: GDAL's own Parquet driver is optional in its builds).
"""
import os
from typing import List, Optional, Sequence, Tuple

import geopandas as gpd
import numpy as np
import shapely
import torch
from affine import Affine

from ..config import ConfigError
from ..data.output_files import OutputSet
from ..ops import rotated_box_corners

__all__ = [
    "VECTOR_DRIVERS",
    "DETECTION_COLUMNS",
    "VectorError",
    "vector_driver",
    "boxes_to_polygons",
    "polygons_to_boxes",
    "detections_frame",
    "detections_layer",
    "write_layer",
    "write_detections",
    "read_vectors",
]

# GeoParquet is written and read by geopandas (`to_parquet`, `read_parquet`), not by OGR.
GEOPARQUET = "Parquet"
VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile", ".parquet": GEOPARQUET}
DETECTION_COLUMNS = ("score", "label", "class_id", "source")


class VectorError(ConfigError):
    """A vector file cannot be read or written as asked; the message names the file and value."""


def vector_driver(path: str) -> str:
    """The OGR driver for `path`'s ending, or a VectorError naming the endings known."""
    ending = os.path.splitext(path)[1].lower()
    if ending not in VECTOR_DRIVERS:
        raise VectorError(f"{path}: unknown vector format {ending!r}; use one of {', '.join(VECTOR_DRIVERS)}")
    return VECTOR_DRIVERS[ending]


def boxes_to_polygons(boxes: np.ndarray, transform: Affine) -> np.ndarray:
    """
    Args:
        boxes: (N, 4) pixel boxes (x0, y0, x1, y1), pixel i covering [i, i + 1); or (N, 5)
            rotated pixel boxes (cx, cy, w, h, angle in degrees counter-clockwise, Detectron2's
            XYWHA).
        transform: the raster's affine transform (pixel column, row -> CRS x, y).
    Returns:
        (N,) shapely Polygons of the four corners in the CRS: (x0,y0), (x1,y0), (x1,y1), (x0,y1),
        or a rotated box's four corners in the order of `retina_plugin.ops.rotated_box_corners`;
        a rotated or sheared transform gives the exact parallelogram, not its bounds.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim == 2 and boxes.shape[1] == 5:
        corners = rotated_box_corners(torch.from_numpy(boxes)).numpy()  # (N, 4, 2) float64
        cols, rows = corners[..., 0], corners[..., 1]
    else:
        x0, y0, x1, y1 = boxes.reshape(-1, 4).T
        cols = np.stack([x0, x1, x1, x0], axis=1)
        rows = np.stack([y0, y0, y1, y1], axis=1)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
    return shapely.polygons(np.stack([xs, ys], axis=2))


def polygons_to_boxes(geometries, transform: Affine) -> np.ndarray:
    """
    Args:
        geometries: shapely geometries in the raster's CRS.
        transform: the raster's affine transform.
    Returns:
        (N, 4) float64 pixel boxes (x0, y0, x1, y1): the pixel bounds of each geometry.
    """
    inverse = ~transform
    boxes = np.empty((len(geometries), 4))
    for i, geometry in enumerate(geometries):
        coords = shapely.get_coordinates(geometry)
        cols = inverse.a * coords[:, 0] + inverse.b * coords[:, 1] + inverse.c
        rows = inverse.d * coords[:, 0] + inverse.e * coords[:, 1] + inverse.f
        boxes[i] = cols.min(), rows.min(), cols.max(), rows.max()
    return boxes


def detections_frame(boxes, scores, classes, class_names: Sequence[str], transform: Affine, crs, source: str) -> gpd.GeoDataFrame:
    """
    One feature per detection of one raster.

    Args:
        boxes: (N, 4) pixel boxes, or (N, 5) rotated ones (XYWHA); scores: (N,); classes: (N,)
            contiguous class ids.
        class_names: name of each class id (ids beyond it are labelled by their number).
        transform, crs: the raster's; without a CRS, pass the identity transform (pixel space).
        source: the raster file, written in the `source` column.
    """
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    labels = [class_names[k] if k < len(class_names) else str(k) for k in classes.tolist()]
    return gpd.GeoDataFrame(
        {
            "score": np.asarray(scores, dtype=np.float64).reshape(-1),
            "label": labels,
            "class_id": classes,
            "source": [source] * len(classes),
        },
        geometry=boxes_to_polygons(boxes, transform),
        crs=crs,
    )


def detections_layer(frames: List[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """
    The detections of one or more rasters as one layer: frames in another CRS than the first
    one's are reprojected to it (one layer has one CRS).
    """
    crs = frames[0].crs if frames else None
    frames = [f if f.crs == crs or f.crs is None or crs is None else f.to_crs(crs) for f in frames]
    return gpd.GeoDataFrame(
        gpd.pd.concat(frames, ignore_index=True) if frames else {c: [] for c in DETECTION_COLUMNS},
        geometry="geometry" if frames else gpd.GeoSeries([], crs=crs),
        crs=crs,
    )


def write_layer(frame: gpd.GeoDataFrame, path: str, output: str) -> None:
    """
    Write `frame` to `path` as its ending says, named as `output` would name it (its stem):
    callers pass an OutputSet's temporary path for `output`.
    """
    driver = vector_driver(path)
    if driver == GEOPARQUET:
        frame.to_parquet(path)  # the CRS goes in the file's GeoParquet metadata
        return
    # A Shapefile's layer is its file; the others store the name, which the temporary's would spoil.
    layer = None if driver == "ESRI Shapefile" else os.path.splitext(os.path.basename(output))[0]
    frame.to_file(path, driver=driver, layer=layer, engine="pyogrio")


def write_detections(frames: List[gpd.GeoDataFrame], path: str) -> gpd.GeoDataFrame:
    """
    Write the detections of one or more rasters to one layer at `path` (detections_layer),
    whole or not at all and by one process at a time (retina_plugin.data.output_files).
    Returns the frame written.
    """
    vector_driver(path)
    frame = detections_layer(frames)
    with OutputSet(path) as out:
        write_layer(frame, out.temp(path), path)
        out.commit()
    return frame


def read_vectors(path: str, crs=None, label_column: Optional[str] = None) -> Tuple[gpd.GeoDataFrame, Optional[str]]:
    """
    Read a vector file (anything OGR reads, and GeoParquet), reprojected to `crs` when it has another one.

    Returns:
        (frame, label column): the column naming each feature's class (`label_column`, else
        "label" when the file has one, else None: one class).
    Raises:
        VectorError: unreadable file, no CRS where `crs` is given, no such label column.
    """
    try:
        if VECTOR_DRIVERS.get(os.path.splitext(path)[1].lower()) == GEOPARQUET:
            frame = gpd.read_parquet(path)
        else:
            frame = gpd.read_file(path, engine="pyogrio")
    except Exception as e:  # pyogrio raises DataSourceError, DataLayerError, OSError; pyarrow ArrowInvalid ...
        raise VectorError(f"{path}: cannot read vectors: {str(e).splitlines()[0]}") from None
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    if crs is not None and frame.crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    if label_column is not None and label_column not in frame.columns:
        raise VectorError(f"{path}: no column {label_column!r} (columns: {', '.join(map(str, frame.columns))})")
    if label_column is None and "label" in frame.columns:
        label_column = "label"
    return frame, label_column
