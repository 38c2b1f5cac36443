"""
Map polygons as rotated pixel boxes, for scoring a rotated model's rasters (geo.evaluate): a
rotated model's predict_raster writes each detection as its four corners, a turned rectangle,
in the raster's CRS; a detection layer holding one (`has_turned_rectangles`) is scored rotated.

Every polygon (detection or ground truth) becomes the minimum-area rectangle around it in the
raster's pixel space (`data.rotated_boxes.polygon_to_xywha`, as a DOTA polygon becomes one), as
Detectron2's XYWHA box (centre, size, angle in degrees counter-clockwise in image coordinates),
matched by rotated IoU. For a
rectangle, as a rotated model predicts and as oriented labels are drawn, that is the polygon
itself, exactly. A polygon that is not a rectangle (a tree crown) is scored by the box the model
could have predicted, as the axis-aligned evaluation scores it by its enclosing box: a polygon
IoU (shapely) would charge a box model for the shape it cannot express, and COCO's area ranges
would no longer be those of boxes.
"""
import numpy as np
import shapely
from affine import Affine

from ..data.rotated_boxes import polygon_to_xywha

__all__ = ["has_turned_rectangles", "polygons_to_rotated_boxes"]

RECTANGLE_TOLERANCE = 1e-6  # relative area: a polygon this close to its minimum rectangle is one


def has_turned_rectangles(geometries) -> bool:
    """
    Whether some polygon of `geometries` (as read, in its layer's CRS) is a rectangle whose sides
    are not parallel to the axes (four corners; the area of its minimum rectangle, not its bounds).
    """
    geometries = np.asarray(geometries, dtype=object)
    if len(geometries) == 0:
        return False
    area = shapely.area(geometries)
    four = shapely.get_num_coordinates(geometries) == 5  # a closed ring of four corners
    rectangle = np.isclose(area, shapely.area(shapely.minimum_rotated_rectangle(geometries)), rtol=RECTANGLE_TOLERANCE)
    turned = area < shapely.area(shapely.envelope(geometries)) * (1 - RECTANGLE_TOLERANCE)
    return bool((four & rectangle & turned & (area > 0)).any())


def polygons_to_rotated_boxes(geometries, transform: Affine) -> np.ndarray:
    """
    Args:
        geometries: (N,) shapely polygons of positive area in the raster's CRS.
        transform: the raster's affine transform (pixel column, row -> CRS x, y).
    Returns:
        (N, 5) float64 XYWHA pixel boxes: the minimum-area rectangle of each polygon in pixel space.
    """
    geometries = np.asarray(geometries, dtype=object)
    if len(geometries) == 0:
        return np.zeros((0, 5))
    inverse = ~transform

    def to_pixels(xy):
        return np.column_stack([inverse.a * xy[:, 0] + inverse.b * xy[:, 1] + inverse.c,
                                inverse.d * xy[:, 0] + inverse.e * xy[:, 1] + inverse.f])  # fmt: skip

    pixels = shapely.transform(geometries, to_pixels)
    return np.array([polygon_to_xywha(shapely.get_coordinates(g)) for g in pixels], np.float64).reshape(-1, 5)
