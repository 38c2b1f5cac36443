"""
Training and test datasets cut from a georeferenced raster and its objects as map features:
the raster cut into square tiles (`tile_grid`, as tiled inference cuts it), each object's
pixel box given to the tiles that hold more than half of it, clipped to the tile. Each tile is
one Detectron2 dataset dict that names its window of the raster ("raster_window",
"raster_bands"); `RetinaDatasetMapper` reads that window when it maps the dict.

- Vectors in another CRS than the raster's are reprojected to it; vectors without a CRS are
  taken to be in the raster's (warning). A raster without a CRS takes the vectors'
  coordinates as pixel coordinates (column, row; warning).
- Tiles whose every pixel is nodata are left out. Tiles without a box are kept as background
  examples: Detectron2's DATALOADER.FILTER_EMPTY_ANNOTATIONS (True by default) leaves them out
  of training; evaluation sees them all.
- Class names are the sorted values of the label column (`label_column`, else "label" where
  the file has one), else the one class "object". A test split takes the training split's
  `class_names`, so both have the same category ids.
"""
import copy
import logging
import os
from typing import List, Optional, Sequence

import numpy as np
import shapely
from affine import Affine
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..inference.tiles import tile_grid
from ..data.raster import RasterSource
from .vectors import VectorError, polygons_to_boxes, read_vectors

__all__ = ["DEFAULT_TILE_SIZE", "raster_dataset_dicts", "register_raster_dataset", "raster_tiling_from_config"]

logger = logging.getLogger(__name__)

# Tile side where MODEL.RETINA_PLUGIN.TILE_SIZE is 0: the 512 px crops aerial detectors usually
# train on, at a batch that fits a GPU with room to spare.
DEFAULT_TILE_SIZE = 512

# A box belongs to a tile that holds more than this fraction of its area.
MIN_INSIDE_FRACTION = 0.5


def raster_tiling_from_config(cfg) -> dict:
    """The keyword arguments of `raster_dataset_dicts` that a config sets: tile size, overlap, bands, channels."""
    node = cfg.MODEL.RETINA_PLUGIN
    return dict(
        tile_size=node.TILE_SIZE if node.TILE_SIZE > 0 else DEFAULT_TILE_SIZE,
        overlap=node.TILE_OVERLAP,
        bands=list(node.RASTER_BANDS) or None,
        input_format=cfg.INPUT.FORMAT,
        num_channels=len(cfg.MODEL.PIXEL_MEAN),
    )


def _vector_boxes(source: RasterSource, vectors: str, label_column: Optional[str], class_names: Optional[Sequence[str]]):
    """
    Returns:
        boxes: (N, 4) float64 pixel boxes (x0, y0, x1, y1) of the features, in the raster's pixels.
        classes: (N,) int64 contiguous ids into `class_names`.
        class_names: given, or found in the label column.
    """
    raster = source.path
    if source.crs is None:
        logger.warning(f"{raster}: the raster has no CRS; the coordinates of {vectors} are taken as pixel coordinates")
        frame, label_column = read_vectors(vectors, None, label_column)
        transform = Affine.identity()
    else:
        frame, label_column = read_vectors(vectors, source.crs, label_column)
        if frame.crs is None:
            logger.warning(f"{vectors}: the vectors have no CRS; taken to be in the raster's ({source.crs}) of {raster}")
        transform = source.transform
    if len(frame) == 0:
        raise VectorError(f"{vectors}: no features (vectors of raster {raster})")
    if label_column is None:
        if class_names is not None and len(class_names) > 1:
            raise VectorError(
                f"{vectors}: no label column, but the training classes are {list(class_names)}: name it with --label-column"
            )
        labels = None
        class_names = list(class_names) if class_names else ["object"]
    else:
        labels = frame[label_column].astype(str).to_numpy()
        if class_names is None:
            class_names = sorted(set(labels.tolist()))
        class_names = list(class_names)
        unknown = sorted(set(labels.tolist()) - set(class_names))
        if unknown:
            raise VectorError(
                f"{vectors}: label(s) {', '.join(map(repr, unknown[:5]))} of column {label_column!r} are not among "
                f"the training classes {class_names}"
            )
    index = {name: i for i, name in enumerate(class_names)}
    classes = np.zeros(len(frame), np.int64) if labels is None else np.array([index[k] for k in labels], np.int64)
    boxes = polygons_to_boxes(frame.geometry.to_numpy(), transform)

    # Does any feature overlap the raster? Else the two files do not belong together (or a CRS is wrong).
    inside = (boxes[:, 0] < source.width) & (boxes[:, 2] > 0) & (boxes[:, 1] < source.height) & (boxes[:, 3] > 0)
    if not inside.any():
        lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
        raise VectorError(
            f"{vectors}: none of its {len(boxes)} features overlaps the raster {raster} "
            f"(features span pixels x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}; "
            f"the raster is {source.width} x {source.height}, CRS {source.crs})"
        )
    return boxes, classes, class_names


def _tile_annotations(boxes: np.ndarray, classes: np.ndarray, tile: Sequence[int]) -> List[dict]:
    """The boxes (N, 4) with more than half their area in `tile` (x0, y0, x1, y1), clipped, in tile pixels."""
    x0, y0, x1, y1 = tile
    clipped = np.clip(boxes, [x0, y0, x0, y0], [x1, y1, x1, y1])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = np.flatnonzero(inside > MIN_INSIDE_FRACTION * area)
    offset = np.array([x0, y0, x0, y0], np.float64)
    return [
        {"bbox": (clipped[i] - offset).tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(classes[i]), "iscrowd": 0}
        for i in keep.tolist()
    ]


def _cut(raster, vectors, tile_size, overlap, bands, input_format, num_channels, label_column, class_names):
    raster, vectors = os.fspath(raster), os.fspath(vectors)
    with RasterSource(raster, bands, input_format, num_channels) as source:
        boxes, classes, class_names = _vector_boxes(source, vectors, label_column, class_names)
        degenerate = ~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        if degenerate.any():
            logger.warning(f"{vectors}: {int(degenerate.sum())} feature(s) with an empty pixel box (points, lines) left out")
            boxes, classes = boxes[~degenerate], classes[~degenerate]
        tree = shapely.STRtree(shapely.box(*boxes.T))
        dicts, nodata = [], 0
        for tile in tile_grid(source.height, source.width, tile_size, overlap).tolist():
            if source.read(*tile) is None:
                nodata += 1
                continue
            candidates = np.sort(tree.query(shapely.box(*tile)))
            x0, y0, x1, y1 = tile
            dicts.append({
                "file_name": raster,
                "image_id": len(dicts),
                "height": y1 - y0,
                "width": x1 - x0,
                "raster_window": (x0, y0, x1, y1),
                "raster_bands": list(source.bands),
                "annotations": _tile_annotations(boxes[candidates], classes[candidates], tile),
            })  # fmt: skip
    empty = sum(not d["annotations"] for d in dicts)
    logger.info(
        f"{raster}: {len(dicts)} tiles of {tile_size} px (overlap {overlap}), {empty} of them without a box, "
        f"{nodata} all-nodata tiles left out; {sum(len(d['annotations']) for d in dicts)} boxes from {len(boxes)} "
        f"features of {vectors}"
    )
    return dicts, class_names


def raster_dataset_dicts(
    raster: str,
    vectors: str,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: float = 0.0,
    bands: Optional[Sequence[int]] = None,
    input_format: str = "BGR",
    num_channels: Optional[int] = None,
    label_column: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
) -> List[dict]:
    """
    Detectron2 dataset dicts of the tiles of `raster` with the boxes of `vectors`.

    Args:
        raster: GeoTIFF (anything GDAL reads); vectors: its objects (.gpkg, .geojson, .shp ...).
        tile_size, overlap: the tiles, as `retina_plugin.inference.tiles.tile_grid` cuts them.
        bands, input_format, num_channels: as `RasterSource` takes them (cfg.MODEL.RETINA_PLUGIN.RASTER_BANDS,
            cfg.INPUT.FORMAT, len(cfg.MODEL.PIXEL_MEAN)); checked against the raster here.
        label_column: the vectors' class column (default "label" where there is one).
        class_names: the classes (ids in this order); default: the sorted labels.
    Returns:
        one dict per tile that is not all nodata: file_name (the raster), image_id (0, 1, ...),
        height, width (the tile's), raster_window (x0, y0, x1, y1), raster_bands, annotations
        (bbox XYXY_ABS in tile pixels, category_id, iscrowd 0).
    Raises:
        RasterError, VectorError: a file that cannot be read, a band out of range, vectors that do
            not overlap the raster, labels outside `class_names`; the message names the file.
    """
    return _cut(raster, vectors, tile_size, overlap, bands, input_format, num_channels, label_column, class_names)[0]


def register_raster_dataset(
    name: str,
    raster: str,
    vectors: str,
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: float = 0.0,
    bands: Optional[Sequence[int]] = None,
    input_format: str = "BGR",
    num_channels: Optional[int] = None,
    label_column: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
):
    """
    Cut the tiles now (errors show before anything is built) and register them as `name` in
    DatasetCatalog, with thing_classes and evaluator_type "coco" in MetadataCatalog:
    COCOEvaluator converts the dicts to COCO json itself (`convert_to_coco_json`, boxes to XYWH)
    and caches it as <output folder>/<name>_coco_format.json. A `name` registered before is
    replaced. Arguments as `raster_dataset_dicts`.

    Returns:
        detectron2.data.Metadata: the dataset's metadata.
    """
    dicts, class_names = _cut(raster, vectors, tile_size, overlap, bands, input_format, num_channels, label_column, class_names)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    # A fresh copy per call: the loaders tag and clip the dicts they are given.
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    return MetadataCatalog.get(name).set(
        thing_classes=list(class_names), evaluator_type="coco", raster=os.fspath(raster), vectors=os.fspath(vectors),
        tile_size=tile_size, tile_overlap=overlap,
    )  # fmt: skip
