"""
Synthetic georeferenced scenes, for tests, benchmarks and trying the tools without data:
a GeoTIFF tiled from blocks of the embedded shapes dataset's drawing (`make_shapes_image`),
in a projected CRS, with an optional nodata border and a fourth band (a synthetic
near-infrared), and the objects as a vector layer in the same CRS.

The raster is written block row by block row, so a 20480 x 20480 scene needs the memory of
one row of blocks, not of the raster.

    python -m retina_plugin.geo.scenes out/scene.tif --size 2048 --vectors out/objects.gpkg
"""
import argparse
import os
from types import SimpleNamespace
from typing import Optional

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ..data.shapes import SHAPES_CLASSES, make_shapes_image

__all__ = ["write_shapes_scene", "SCENE_CRS"]

SCENE_CRS = "EPSG:32633"  # WGS 84 / UTM zone 33N
SCENE_ORIGIN = (500000.0, 5400000.0)  # upper-left corner, metres
NODATA = 0


def write_shapes_scene(
    path: str,
    size: int = 1024,
    *,
    block: int = 128,
    bands: int = 3,
    border: int = 0,
    pixel_size: float = 0.1,
    crs: Optional[str] = SCENE_CRS,
    seed: int = 0,
    min_object_size: int = 10,
    max_object_size: int = 20,
    max_objects: int = 10,
    vectors: Optional[str] = None,
    single_class: bool = False,
) -> SimpleNamespace:
    """
    Write a `size` x `size` GeoTIFF (uint8, DEFLATE, 256-pixel internal tiles).

    Args:
        block: side of each block of shapes; the blocks fill the raster inside the border.
        bands: 3 (red, green, blue) or 4 (and a near-infrared: 255 - the green band).
        border: a frame of this many pixels that is nodata (0 in every band) and holds no object.
        pixel_size: metres per pixel; crs: the raster's CRS (None: none written).
        vectors: also write the objects' boxes as polygons here (columns `label`).
        single_class: label every object "shape" (the tiny test detector's one class).
    Returns:
        namespace of boxes ((N, 4) pixel XYXY), classes ((N,) int64), class_names,
        transform, crs, path.
    """
    if bands not in (3, 4):
        raise ValueError(f"bands {bands}: 3 or 4")
    transform = Affine(pixel_size, 0.0, SCENE_ORIGIN[0], 0.0, -pixel_size, SCENE_ORIGIN[1])
    inner = size - 2 * border
    blocks = inner // block
    profile = dict(
        driver="GTiff", width=size, height=size, count=bands, dtype="uint8", crs=crs, transform=transform,
        nodata=NODATA if border else None, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    boxes, classes = [], []
    with rasterio.open(path, "w", **profile) as dst:
        if border:
            zeros = np.zeros((bands, min(size, 1024), size), np.uint8)
            for y in range(0, size, zeros.shape[1]):
                h = min(zeros.shape[1], size - y)
                dst.write(zeros[:, :h], window=Window(0, y, size, h))
        for row in range(blocks):
            strip = np.zeros((bands, block, blocks * block), np.uint8)
            for col in range(blocks):
                rng = np.random.default_rng([seed, row, col])
                bgr, objects = make_shapes_image(rng, block, min_object_size, max_object_size, max_objects)
                rgb = bgr[:, :, ::-1].transpose(2, 0, 1)
                strip[:3, :, col * block : (col + 1) * block] = rgb
                if bands == 4:
                    strip[3, :, col * block : (col + 1) * block] = 255 - rgb[1]
                x_off, y_off = border + col * block, border + row * block
                for cls, (x, y, w, h), _area in objects:
                    boxes.append([x + x_off, y + y_off, x + x_off + w, y + y_off + h])
                    classes.append(0 if single_class else cls)
            # A drawn pixel of value 0 would read as nodata: lift it to 1.
            if border:
                np.maximum(strip, 1, out=strip)
            dst.write(strip, window=Window(border, border + row * block, blocks * block, block))
    class_names = ("shape",) if single_class else SHAPES_CLASSES
    scene = SimpleNamespace(
        path=path, boxes=np.asarray(boxes, np.float64).reshape(-1, 4), classes=np.asarray(classes, np.int64),
        class_names=class_names, transform=transform, crs=crs, size=size, border=border,
    )  # fmt: skip
    if vectors:
        from .vectors import boxes_to_polygons, write_layer
        import geopandas as gpd

        frame = gpd.GeoDataFrame(
            {"label": [class_names[k] for k in scene.classes.tolist()]},
            geometry=boxes_to_polygons(scene.boxes, transform), crs=crs,
        )  # fmt: skip
        write_layer(frame, vectors, vectors)
    return scene


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="GeoTIFF to write")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--bands", type=int, default=3, choices=(3, 4))
    parser.add_argument("--border", type=int, default=0, help="nodata frame, pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vectors", help="also write the objects here (.gpkg, .geojson, .shp, .parquet)")
    parser.add_argument("--single-class", action="store_true", help='label every object "shape"')
    parser.add_argument("--block", type=int, default=128, help="side of each block of shapes, pixels")
    parser.add_argument("--object-sizes", type=int, nargs=2, default=(10, 20), metavar=("MIN", "MAX"),
                        help="the objects' sizes, pixels (at most --block)")
    parser.add_argument("--max-objects", type=int, default=10, help="the most objects in a block")
    args = parser.parse_args(argv)
    scene = write_shapes_scene(
        args.output, args.size, block=args.block, bands=args.bands, border=args.border, seed=args.seed,
        min_object_size=args.object_sizes[0], max_object_size=args.object_sizes[1], max_objects=args.max_objects,
        vectors=args.vectors, single_class=args.single_class,
    )  # fmt: skip
    print(f"wrote {args.output}: {args.size}x{args.size}, {args.bands} bands, {len(scene.boxes)} objects")


if __name__ == "__main__":
    main()
