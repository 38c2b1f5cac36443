"""
tools/predict_raster.py's windowed path against the same tiled inference on the raster loaded
whole: time and peak memory on generated GeoTIFFs (issue 16).

    python benchmarks/raster.py [--sizes 4096 10240 20480] [--dtypes float32 int8] [--threads 2]
        [--repeat 1] [--workdir /tmp/retina_raster_bench]

Per size and dtype, two paths, each in a fresh interpreter (`--worker PATH`), alternating:

  windowed   `RasterPredictor(cfg).predict(path)`: windows read one by one with rasterio
  in memory  the whole raster read with rasterio into one (H, W, 3) BGR uint8 array, then
             `TiledPredictor(cfg)(image)`; its peak memory includes the loaded raster

The timed part excludes building the model and loading its weights, and includes every raster
read. Peak RSS is the process's VmHWM, reset through /proc/self/clear_refs when the timed part
starts; the growth is over the RSS at that point. (`getrusage`'s ru_maxrss would not do: a
process started by fork + exec keeps its parent's peak there, and clear_refs does not reset it.)

Rasters (3 bands uint8, DEFLATE, 256-pixel internal tiles: `retina_plugin.geo.scenes`), the
model's random weights and the int8 calibration are written once into --workdir and reused.
The model is configs/scenes_narrow_R50_cpu.yaml's narrow ResNet-50-FPN with random weights (seed 0):
it detects nothing meaningful, but with SCORE_THRESH_TEST 0 and DETECTIONS_PER_IMAGE 20 every
window gives 20 detections for the merge.

This file is the command line, the worker and the driver; raster_inputs.py makes the files,
raster_report.py the table, checks and targets.
"""
import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

import harness
from raster_inputs import (
    CALIBRATION_SIZE, DETECTIONS_PER_WINDOW, OVERLAP, PATHS, SEED, TILE, TILE_BATCH,
    ensure_calibration, ensure_raster, ensure_weights, model_config,
)  # fmt: skip
from raster_report import report, summarize

LOAD_GDAL_CACHE = 64 * 2**20  # bytes, while the in-memory path loads the raster


# ---------------------------------------------------------------------------------------------
# Worker: one measurement in a fresh interpreter


def load_bgr(path: str) -> np.ndarray:
    """
    The whole raster as one (H, W, 3) BGR uint8 array, read by one rasterio call into it.
    GDAL's block cache is bounded (LOAD_GDAL_CACHE) so that the peak is the image's and not
    also that of GDAL_CACHEMAX's default (5 % of RAM) of cached blocks: on 20480², 8.4 s and
    +1281 MiB instead of 11.1 s and +2421 MiB.
    """
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=LOAD_GDAL_CACHE), rasterio.open(path) as dataset:
        image = np.empty((dataset.height, dataset.width, 3), np.uint8)
        dataset.read([3, 2, 1], out=image.transpose(2, 0, 1))
    return image


def warm_up(predictor, path: str) -> None:
    """One forward of a batch of windows before timing (oneDNN primitives, int8 weight packing)."""
    from retina_plugin.data.raster import RasterSource

    cfg = predictor.cfg
    with RasterSource(path, None, cfg.INPUT.FORMAT, len(cfg.MODEL.PIXEL_MEAN)) as source:
        window = torch.from_numpy(source.read(0, 0, TILE, TILE)).float()
    with torch.no_grad():
        predictor.model([{"image": window, "height": TILE, "width": TILE}] * TILE_BATCH)


def run_worker(args) -> dict:
    """One path (`--worker`) on one raster and dtype; the timed part starts after warm_up."""
    from retina_plugin.data import raster as raster_module
    from retina_plugin.geo.predict import RasterPredictor
    from retina_plugin.inference.predictor import TiledPredictor

    torch.set_num_threads(args.threads)
    cfg = model_config(args.weights, args.dtype, args.calibration)
    predictor = RasterPredictor(cfg) if args.worker == "windowed" else TiledPredictor(cfg)
    warm_up(predictor, args.raster)
    read_seconds = [0.0]
    if args.worker == "windowed":
        read = raster_module.RasterSource.read

        def timed_read(self, *window):
            start = time.perf_counter()
            data = read(self, *window)
            read_seconds[0] += time.perf_counter() - start
            return data

        raster_module.RasterSource.read = timed_read
    rss_before = harness.proc_status_mib("VmRSS")
    harness.reset_peak_rss()
    cpu_start, start = time.process_time(), time.perf_counter()
    if args.worker == "windowed":
        result = predictor.predict(args.raster, progress=False)
        boxes, scores, windows = result.boxes, result.scores, result.windows
    else:
        image = load_bgr(args.raster)
        read_seconds[0] = time.perf_counter() - start
        instances = predictor(image)["instances"]
        boxes, scores = instances.pred_boxes.tensor.numpy(), instances.scores.numpy()
        windows = predictor.tiled.num_tiles(*image.shape[:2])
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak = harness.proc_status_mib("VmHWM")
    digest = hashlib.sha256(np.ascontiguousarray(boxes).tobytes() + np.ascontiguousarray(scores).tobytes()).hexdigest()
    return {
        "seconds": seconds, "read_seconds": read_seconds[0], "peak_rss_mib": peak, "rss_before_mib": rss_before,
        "detections": len(boxes), "windows": windows, "digest": digest[:16], "cpu_seconds": cpu_seconds,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Driver


def spawn(path: str, size: int, dtype: str, files: dict, args) -> dict:
    worker_args = [
        "--raster", files[size], "--dtype", dtype, "--weights", files["weights"],
        "--calibration", files.get("calibration", ""), "--threads", args.threads,
    ]  # fmt: skip
    env = {"OMP_NUM_THREADS": str(args.threads)}
    return harness.spawn_worker(__file__, path, worker_args, Path(args.workdir) / "worker.json", env)


def prepare(args, sizes) -> dict:
    """The rasters, weights and (with int8) calibration in the workdir, made where missing; the setup printed."""
    import rasterio

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = {size: ensure_raster(workdir, size) for size in sizes}
    files["weights"] = ensure_weights(workdir)
    if "int8" in args.dtypes:
        calibration_size = CALIBRATION_SIZE if CALIBRATION_SIZE in sizes else sizes[0]
        files["calibration"] = ensure_calibration(workdir, files["weights"], files[calibration_size])
    print(
        f"windows of {TILE} px, overlap {OVERLAP}, {TILE_BATCH} per forward; {args.threads} threads; "
        f"torch {torch.__version__}, rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__}; "
        f"load average {harness.load_average():.2f}",
        flush=True,
    )
    print(
        f"model: configs/scenes_narrow_R50_cpu.yaml's narrow ResNet-50-FPN, random weights (seed {SEED}, {files['weights']}), "
        f"SCORE_THRESH_TEST 0.0 and DETECTIONS_PER_IMAGE {DETECTIONS_PER_WINDOW}: every window gives "
        f"{DETECTIONS_PER_WINDOW} detections to merge",
        flush=True,
    )
    if "calibration" in files:
        print(f"int8 calibration: {files['calibration']}", flush=True)
    return files


def run_driver(args) -> None:
    args.workdir = str(Path(args.workdir).resolve())  # the workers run from the repository root
    sizes = sorted(args.sizes)
    files = prepare(args, sizes)
    results = {}
    for size in sizes:
        for dtype in args.dtypes:
            for repeat in range(args.repeat):
                order = PATHS if repeat % 2 == 0 else PATHS[::-1]
                for path in order:
                    r = spawn(path, size, dtype, files, args)
                    results.setdefault((size, dtype, path), []).append(r)
                    print(
                        f"  {size}² {dtype:7s} {path:9s} ({r['windows']} windows): {r['seconds']:.1f} s "
                        f"(reads {r['read_seconds']:.1f} s), peak RSS {r['peak_rss_mib']:.0f} MiB "
                        f"(+{r['peak_rss_mib'] - r['rss_before_mib']:.0f}), {r['detections']} detections; "
                        f"CPU time {r['cpu_seconds'] / r['seconds']:.2f} x wall, load average {harness.load_average():.2f}",
                        flush=True,
                    )
    rows = {key: summarize(runs) for key, runs in results.items()}
    raw = [{"size": s, "dtype": d, "path": p, "runs": runs} for (s, d, p), runs in results.items()]
    (Path(args.workdir) / f"results_{args.threads}t.json").write_text(json.dumps(raw, indent=1))
    print(f"\nload average at the end {harness.load_average():.2f}\n")
    print(report(rows, sizes, args.dtypes, args.threads))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 10240, 20480], help="sides of the square rasters")
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "int8"), default=["float32", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path (median time, largest peak)")
    parser.add_argument("--workdir", default="/tmp/retina_raster_bench", help="cache of rasters, weights, calibration")
    harness.add_worker_arguments(parser, PATHS, inputs=("raster", "dtype", "weights", "calibration"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    harness.main(parse_args(), run_worker, run_driver)
