"""
The parts folder of a distributed prediction (`<output>.parts/`): one GeoParquet file per
finished (raster, block) task, written whole or not at all, so a run killed anywhere resumes
where it stopped and counts every block exactly once.

- A part is named `<raster stem>.<raster key>.b<block>.<fingerprint>.parquet`: the raster key
  hashes the raster's absolute path, size and modification time, the fingerprint the run's
  settings (`run_settings`: every config key, the weights file's content, the per-class
  thresholds, the block size, the boxes' columns).
- A part holds the block's boxes in the raster's pixels, exactly, as columns: x0, y0, x1, y1, or
  cx, cy, w, h, angle for a model of rotated boxes (XYWHA); its geometry is their polygons in the
  raster's CRS.
- It is written under a temporary name holding the writer's pid (`.<name>.partial-<pid>`) and
  renamed into place (os.replace): a worker killed while writing leaves only a temporary, which
  never counts and which the next run removes.
- `settings.json` in the folder records the settings of the parts; a run with other settings is
  refused (`PartsMismatchError`) naming each setting that differs, never mixed in.
"""
import glob
import hashlib
import json
import os
import time
from typing import Dict, Optional, Sequence

import geopandas as gpd
import numpy as np
from affine import Affine

from ..errors import UserError
from ..modeling.box_transform import is_rotated
from .vectors import boxes_to_polygons

__all__ = ["BOX_COLUMNS", "PartsMismatchError", "run_settings", "PartsFolder", "write_part", "read_part"]

SETTINGS_FILE = "settings.json"
# A part's pixel boxes by their number of values: horizontal XYXY, rotated XYWHA (Detectron2's
# RotatedBoxes: the angle in degrees counter-clockwise).
BOX_COLUMNS = {4: ("x0", "y0", "x1", "y1"), 5: ("cx", "cy", "w", "h", "angle")}
# Tests kill a worker while it writes a part (tests/geo/test_dask_predict.py): with
# RETINA_TEST_PAUSE_PART=<file>, a part's temporary is written, then renamed only once <file> is gone.
PAUSE_VARIABLE = "RETINA_TEST_PAUSE_PART"


class PartsMismatchError(UserError):
    """The parts folder holds parts of a run with other settings; the message names them."""


def _flatten(node, prefix="") -> Dict[str, object]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_settings(cfg, class_thresholds: Optional[Sequence[float]], block_windows: int) -> Dict[str, object]:
    """
    What the detections of a run depend on, by name: every config key (dotted), the sha256 of
    MODEL.WEIGHTS's content, the per-class thresholds, the block side in windows, and the boxes
    the parts hold (`BOX_COLUMNS`: horizontal, or rotated for `is_rotated(cfg)`).
    """
    settings = json.loads(json.dumps(_flatten(cfg), default=str))
    weights = cfg.MODEL.WEIGHTS
    settings["weights sha256"] = _file_sha256(weights) if weights and os.path.isfile(weights) else None
    settings["class thresholds"] = None if class_thresholds is None else [float(t) for t in class_thresholds]
    settings["--block-windows"] = block_windows
    settings["part boxes"] = ", ".join(BOX_COLUMNS[5 if is_rotated(cfg) else 4])
    return settings


def raster_key(path: str) -> str:
    """A short hash of the raster's absolute path, size and modification time."""
    stat = os.stat(path)
    text = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:10]


class PartsFolder:
    """The parts folder of `output` for a run with `settings` (run_settings)."""

    def __init__(self, output: str, settings: Dict[str, object]):
        self.root = output + ".parts"
        self.settings = settings
        self.fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]

    def open(self) -> None:
        """
        Create the folder, or check that its parts are of these settings (PartsMismatchError
        naming each one that differs), and remove the temporaries of killed writers. Call it
        while holding the output's lock (OutputSet), so that no other run writes there.
        """
        path = os.path.join(self.root, SETTINGS_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                before = json.load(f)
            differ = [k for k in sorted(set(before) | set(self.settings)) if before.get(k) != self.settings.get(k)]
            if differ:
                changes = "; ".join(f"{k} was {before.get(k)!r}, now {self.settings.get(k)!r}" for k in differ[:5])
                more = f" (and {len(differ) - 5} more)" if len(differ) > 5 else ""
                raise PartsMismatchError(
                    f"{self.root} holds parts of a run with other settings: {changes}{more}; "
                    "rerun with the same settings, or remove the folder (or choose another --output)"
                )
        else:
            os.makedirs(self.root, exist_ok=True)
            temp = f"{path}.partial-{os.getpid()}"
            with open(temp, "w") as f:
                json.dump(self.settings, f, indent=1, sort_keys=True)
            os.replace(temp, path)
        self.remove_temporaries()

    def remove_temporaries(self) -> None:
        """Remove the parts' temporaries: call it when no task runs (those left are of killed writers)."""
        for temp in glob.glob(os.path.join(self.root, ".*.partial-*")):
            os.remove(temp)

    def part(self, raster: str, block: int) -> str:
        stem = os.path.splitext(os.path.basename(raster))[0]
        return os.path.join(self.root, f"{stem}.{raster_key(raster)}.b{block:06d}.{self.fingerprint}.parquet")


def write_part(path: str, block: dict, attrs: dict, transform: Affine, crs) -> None:
    """
    Write one block's detections (`blocks.detect_block`) to `path` as GeoParquet, atomically:
    the exact pixel boxes as columns (`BOX_COLUMNS`: x0..y1, or cx, cy, w, h, angle for rotated
    boxes), score, class_id, shared, tile; the boxes' polygons in the raster's CRS (`transform`,
    `crs`: vectors.boxes_to_polygons, as the output has them) as the geometry, to look at; `attrs`
    (windows, skipped, seconds, class names) in the file's metadata.
    """
    boxes = block["boxes"]
    columns = BOX_COLUMNS[boxes.shape[1]]
    frame = gpd.GeoDataFrame(
        {**dict(zip(columns, boxes.T)), "score": block["scores"], "class_id": block["classes"], "shared": block["shared"],
         "tile": block["tile"]},
        # Without a CRS in pixel coordinates, as the output (geo.predict.detections_to_frame).
        geometry=boxes_to_polygons(boxes, transform if crs is not None else Affine.identity()), crs=crs,
    )  # fmt: skip
    frame.attrs.update(attrs)
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.partial-{os.getpid()}")
    frame.to_parquet(temp)
    pause = os.environ.get(PAUSE_VARIABLE)
    while pause and os.path.exists(pause):
        time.sleep(0.05)
    os.replace(temp, path)


def read_part(path: str) -> dict:
    """A part written by `write_part`: the arrays of `blocks.detect_block` and its attrs."""
    frame = gpd.read_parquet(path)
    columns = BOX_COLUMNS[5] if BOX_COLUMNS[5][0] in frame.columns else BOX_COLUMNS[4]
    return {
        "boxes": frame[list(columns)].to_numpy(np.float32).reshape(-1, len(columns)),
        "scores": frame["score"].to_numpy(np.float32),
        "classes": frame["class_id"].to_numpy(np.int64),
        "shared": frame["shared"].to_numpy(bool),
        "tile": frame["tile"].to_numpy(np.int64),
        "attrs": dict(frame.attrs),
    }
