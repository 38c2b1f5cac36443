"""
raster.py's inputs, written once into its --workdir and reused by later runs: the GeoTIFFs,
the model's random weights, the int8 calibration; and the model's config.
"""
import os
import time
from pathlib import Path

import torch

from harness import ROOT

SEED = 0
TILE, OVERLAP, TILE_BATCH = 512, 0.2, 4
DETECTIONS_PER_WINDOW = 20
CALIBRATION_WINDOWS = 4  # of the 4096 raster (or the smallest size run), along its diagonal
CALIBRATION_SIZE = 4096
PATHS = ("windowed", "in memory")

# configs/scenes_narrow_R50_cpu.yaml (the narrow ResNet-50-FPN of tests/tiny_detector.py), with:
MODEL_OPTS = [
    # Random weights score every anchor about 0.01 (the classifier's prior): keep them all, and
    # the 20 best per window after NMS, so that every window has detections to merge.
    "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0,
    "TEST.DETECTIONS_PER_IMAGE", DETECTIONS_PER_WINDOW,
    "MODEL.RETINA_PLUGIN.TILE_SIZE", TILE,
    "MODEL.RETINA_PLUGIN.TILE_OVERLAP", OVERLAP,
    "MODEL.RETINA_PLUGIN.TILE_BATCH", TILE_BATCH,
]  # fmt: skip


def model_config(weights="", dtype="float32", calibration=""):
    from retina_plugin import load_config

    opts = MODEL_OPTS + ["MODEL.WEIGHTS", weights, "MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", dtype]
    if dtype == "int8":
        opts += ["MODEL.RETINA_PLUGIN.INT8_CALIBRATION", calibration]
    return load_config(str(ROOT / "configs" / "scenes_narrow_R50_cpu.yaml"), opts)



def raster_path(workdir: Path, size: int) -> Path:
    return workdir / f"shapes_{size}.tif"


def ensure_raster(workdir: Path, size: int) -> Path:
    from retina_plugin.geo.scenes import write_shapes_scene

    path = raster_path(workdir, size)
    if not path.exists():
        start = time.perf_counter()
        tmp = path.with_suffix(".tmp.tif")
        write_shapes_scene(str(tmp), size, bands=3, border=0, seed=SEED)
        os.replace(tmp, path)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def ensure_weights(workdir: Path) -> Path:
    """The random weights (seed SEED), saved once so that every worker loads the same."""
    from retina_plugin.inference.model import load_model

    path = workdir / f"tiny_R50_seed{SEED}.pth"
    if not path.exists():
        torch.manual_seed(SEED)
        model = load_model(model_config())
        torch.save({"model": model.state_dict()}, path)
    return path


def ensure_calibration(workdir: Path, weights: Path, raster: Path) -> Path:
    """
    int8 ranges of the float32 model on CALIBRATION_WINDOWS windows of `raster`, written as
    tools/calibrate_int8.py writes them (retina_plugin.inference.calibration.run_calibration).
    """
    from retina_plugin.inference.int8 import calibrate_int8, save_int8_calibration, weights_fingerprint
    from retina_plugin.inference.model import load_model
    from retina_plugin.data.raster import RasterSource

    path = workdir / f"int8_calibration_{raster.stem}.json"
    if path.exists():
        return path
    cfg = model_config(str(weights))
    model = load_model(cfg)
    with RasterSource(str(raster), None, cfg.INPUT.FORMAT, len(cfg.MODEL.PIXEL_MEAN)) as source:
        step = (source.width - TILE) // max(1, CALIBRATION_WINDOWS - 1)
        offsets = [i * step for i in range(CALIBRATION_WINDOWS)]
        batches = [[{"image": torch.from_numpy(source.read(o, o, o + TILE, o + TILE)).float()}] for o in offsets]
    ranges = calibrate_int8(model, batches)
    save_int8_calibration(
        str(path), ranges, weights=str(weights), weights_fingerprint=weights_fingerprint(model),
        dataset=f"{raster} ({CALIBRATION_WINDOWS} windows of {TILE})", images=len(batches),
    )  # fmt: skip
    return path
