"""
The rasters named by tools/predict_raster.py's --input: raster files, folders (their rasters,
sorted), globs (`tiles/**/*.tif`, sorted), text files of paths (one a line, `#` comments,
relative to the text file) and STAC ItemCollection JSON files whose assets are local files
(every asset with a raster media type or ending, relative to the JSON file; `file://` URLs).
"""
import glob
import json
import os
from typing import List, Sequence
from urllib.parse import urlparse

from ..data.raster import RASTER_EXTENSIONS, RasterError, resolve_raster_inputs

__all__ = ["raster_paths"]

LIST_ENDINGS = (".txt", ".lst", ".list")
STAC_ENDINGS = (".json", ".geojson")
GLOB_CHARACTERS = "*?["


def _is_raster_asset(asset: dict) -> bool:
    media = str(asset.get("type", "")).lower()
    href = urlparse(str(asset.get("href", ""))).path.lower()
    return "tiff" in media or "jp2" in media or href.endswith(RASTER_EXTENSIONS)


def stac_item_rasters(path: str) -> List[str]:
    """The local raster assets of the items of the STAC ItemCollection (or single Item) at `path`."""
    try:
        with open(path) as f:
            document = json.load(f)
    except (OSError, ValueError) as e:
        raise RasterError(f"{path}: not a readable STAC ItemCollection JSON ({e})") from None
    items = document.get("features") if document.get("type") == "FeatureCollection" else [document]
    if document.get("type") not in ("FeatureCollection", "Feature") or not isinstance(items, list):
        raise RasterError(f"{path}: not a STAC ItemCollection (its \"type\" is {document.get('type')!r}, not \"FeatureCollection\")")
    rasters = []
    for item in items:
        for name, asset in sorted((item.get("assets") or {}).items()):
            if not _is_raster_asset(asset):
                continue
            url = urlparse(asset["href"])
            if url.scheme not in ("", "file"):
                raise RasterError(f"{path}: item {item.get('id')!r} asset {name!r} is at {asset['href']!r}; only local files are read")
            rasters.append(os.path.join(os.path.dirname(os.path.abspath(path)), url.path))
    if not rasters:
        raise RasterError(f"{path}: the STAC ItemCollection has no raster asset (GeoTIFF, JPEG2000 or {', '.join(RASTER_EXTENSIONS)})")
    return rasters


def listed_rasters(path: str) -> List[str]:
    """The paths in the text file `path`, one a line, relative to its folder; blank lines and `#` comments skipped."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    paths = [os.path.join(folder, line) for line in lines if line]
    if not paths:
        raise RasterError(f"{path}: the list of rasters is empty")
    return paths


def raster_paths(inputs: Sequence[str]) -> List[str]:
    """
    Every raster `inputs` name, in order (see the module docstring), or a RasterError naming
    the input that is none: a glob matching nothing, a listed path that does not exist, ...
    """
    paths = []
    for item in inputs:
        ending = os.path.splitext(item)[1].lower()
        if any(c in item for c in GLOB_CHARACTERS) and not os.path.exists(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise RasterError(f"{item}: the pattern matches no file")
            paths += found
        elif os.path.isfile(item) and ending in LIST_ENDINGS:
            paths += resolve_raster_inputs(listed_rasters(item))
        elif os.path.isfile(item) and ending in STAC_ENDINGS:
            paths += resolve_raster_inputs(stac_item_rasters(item))
        else:
            paths += resolve_raster_inputs([item])
    return paths
