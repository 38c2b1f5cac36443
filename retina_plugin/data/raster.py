"""
`RasterSource`: a georeferenced raster (GeoTIFF, or anything GDAL reads) read window by window
with rasterio, in the model's channel order. The raster is never loaded whole.

Bands are 1-based, as GDAL numbers them. The chosen bands (all bands, or `bands`) are read in
the order given, the first three taken as red, green, blue: for a model whose INPUT.FORMAT is
"BGR" (the project's configs, Detectron2's), those three are reversed and any further band
(near-infrared, ...) follows in its order. Pixel values are passed as they are stored (an
8-bit raster gives 0..255, as the images the model was trained on); MODEL.PIXEL_MEAN and
PIXEL_STD normalise them, one entry per channel.
"""
import os
from typing import List, Optional, Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..config import ConfigError

__all__ = ["RASTER_EXTENSIONS", "RasterError", "RasterSource", "parse_bands", "model_channel_order", "resolve_raster_inputs"]

# File name endings (lower case) that count as rasters when a folder is given as input.
RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".jp2")


class RasterError(ConfigError):
    """A raster, its bands or its georeference cannot be used; the message names file and value."""


def parse_bands(text: Optional[str]) -> Optional[List[int]]:
    """'1,2,3' -> [1, 2, 3] (1-based band indices); None or '' -> None (the default bands)."""
    if text is None or not text.strip():
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise RasterError(f"--bands {text!r}: expected 1-based band indices separated by commas, e.g. 1,2,3") from None


def model_channel_order(bands: Sequence[int], input_format: str) -> List[int]:
    """The bands in the model's channel order: the first three reversed for INPUT.FORMAT "BGR"."""
    bands = list(bands)
    if input_format == "BGR" and len(bands) >= 3:
        return bands[2::-1] + bands[3:]
    return bands


def resolve_raster_inputs(inputs: Sequence[str]) -> List[str]:
    """Raster files and the rasters of folders (sorted), or a RasterError naming a path that is neither."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, name) for name in os.listdir(item) if name.lower().endswith(RASTER_EXTENSIONS)
            )
            if not found:
                raise RasterError(f"{item}: folder holds no raster ({', '.join(RASTER_EXTENSIONS)})")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise RasterError(f"{item}: no such raster file or folder")
    return paths


def _first_cause(error: Exception) -> str:
    """The innermost message of a rasterio error chain, on one line (GDAL's own reason sits in __cause__)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return " ".join(str(error).split()) or type(error).__name__


class RasterSource:
    """
    An open raster read window by window in a model's channel order.

    Attributes:
        path, width, height, crs (rasterio CRS or None), transform (affine, pixel -> CRS),
        bands (1-based, as chosen), channel_order (bands in the model's order), nodata.
    """

    def __init__(self, path: str, bands: Optional[Sequence[int]] = None, input_format: str = "BGR", num_channels: Optional[int] = None):
        """
        Args:
            path: the raster file.
            bands: 1-based band indices to read; default: the first `num_channels` bands (all
                bands when `num_channels` is None).
            input_format: the model's cfg.INPUT.FORMAT.
            num_channels: the channels the model takes (len(cfg.MODEL.PIXEL_MEAN)); the chosen
                bands must be as many.
        Raises:
            RasterError: unreadable file, a band out of range, a band count the model does not take.
        """
        self.path = path
        try:
            self.dataset = rasterio.open(path)
        except (RasterioError, OSError) as e:
            raise RasterError(f"{path}: cannot read raster: {str(e).splitlines()[0]}") from None
        count = self.dataset.count
        if bands is None:
            if num_channels is not None and num_channels > count:
                self.close()
                raise RasterError(
                    f"{path}: has {count} band(s) but the model takes {num_channels} channels "
                    "(len(MODEL.PIXEL_MEAN)); choose them with MODEL.RETINA_PLUGIN.RASTER_BANDS (predict_raster: --bands)"
                )
            bands = list(range(1, (num_channels or count) + 1))
        bands = [int(b) for b in bands]
        for band in bands:
            if not 1 <= band <= count:
                self.close()
                raise RasterError(f"{path}: band {band} out of range: the raster has {count} band(s), 1..{count}")
        if num_channels is not None and len(bands) != num_channels:
            self.close()
            raise RasterError(
                f"{path}: {len(bands)} band(s) chosen ({','.join(map(str, bands))}) but the model takes "
                f"{num_channels} channels (len(MODEL.PIXEL_MEAN))"
            )
        self.bands = bands
        self.channel_order = model_channel_order(bands, input_format)
        self.width, self.height = self.dataset.width, self.dataset.height
        self.crs = self.dataset.crs
        self.transform = self.dataset.transform
        self.nodata = self.dataset.nodata

    def read(self, x0: int, y0: int, x1: int, y1: int) -> Optional[np.ndarray]:
        """
        The window [x0, x1) x [y0, y1) in pixels.

        Returns:
            (C, y1 - y0, x1 - x0) array of the raster's dtype, channels in the model's order,
            or None when every pixel of the window is nodata in every chosen band.
        """
        try:
            data = self.dataset.read(self.channel_order, window=Window(x0, y0, x1 - x0, y1 - y0))
        except RasterioError as e:  # a truncated or corrupt file: its header read, its blocks not
            raise RasterError(f"{self.path}: cannot read the window x {x0}..{x1}, y {y0}..{y1}: {_first_cause(e)}") from None
        if self.nodata is not None:
            nodata = np.isnan(data) if np.isnan(self.nodata) else data == self.nodata
            if nodata.all():
                return None
        return data

    def window_reading_env(self, window: int) -> rasterio.Env:
        """
        A rasterio.Env for reading windows of `window` pixels row by row. GDAL keeps every
        block it decompresses in its block cache, up to GDAL_CACHEMAX (by default 5 % of RAM):
        a whole large raster's worth. This bounds the cache to what window-by-window reading
        uses, the blocks of one row of windows (ceil(window / block height) + 1 block rows)
        plus one block row, across the raster's width and with all bands (a block of a
        pixel-interleaved GeoTIFF holds every band): no block is decompressed twice, and the
        cache grows with the raster's width, not its area. A GDAL_CACHEMAX the user set
        (environment variable, or an enclosing rasterio.Env) is kept.
        """
        if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
            return rasterio.Env()
        block_height, block_width = self.dataset.block_shapes[0]
        rows = -(-window // block_height) + 2
        width = -(-self.width // block_width) * block_width
        itemsize = max(np.dtype(dtype).itemsize for dtype in self.dataset.dtypes)
        return rasterio.Env(GDAL_CACHEMAX=rows * block_height * width * self.dataset.count * itemsize)

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
