"""
tools/predict_raster.py's windowed path against the same tiled inference on the raster loaded
whole: time and peak memory on generated GeoTIFFs (issue 16).

    python benchmarks/raster.py [--sizes 4096 10240 20480] [--dtypes float32 int8] [--threads 2]
        [--repeat 1] [--workdir /tmp/retina_raster_bench]

Per size and dtype, two paths, each in a fresh interpreter (`--worker`), alternating:

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
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
TILE, OVERLAP, TILE_BATCH = 512, 0.2, 4
DETECTIONS_PER_WINDOW = 20
CALIBRATION_WINDOWS = 4  # of the 4096 raster (or the smallest size run), along its diagonal
CALIBRATION_SIZE = 4096
PATHS = ("windowed", "in memory")
LOAD_GDAL_CACHE = 64 * 2**20  # bytes, while the in-memory path loads the raster

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


# ---------------------------------------------------------------------------------------------
# What the driver writes once into the workdir


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
    import retina_plugin  # noqa: F401  (registers the plugin)
    from detectron2.modeling import build_model

    path = workdir / f"tiny_R50_seed{SEED}.pth"
    if not path.exists():
        torch.manual_seed(SEED)
        model = build_model(model_config())
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


# ---------------------------------------------------------------------------------------------
# Worker: one measurement in a fresh interpreter


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


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
    import retina_plugin  # noqa: F401
    from retina_plugin.data import raster as raster_module
    from retina_plugin.geo.predict import RasterPredictor
    from retina_plugin.inference.predictor import TiledPredictor

    torch.set_num_threads(args.threads)
    cfg = model_config(args.weights, args.dtype, args.calibration)
    predictor = RasterPredictor(cfg) if args.path == "windowed" else TiledPredictor(cfg)
    warm_up(predictor, args.raster)
    read_seconds = [0.0]
    if args.path == "windowed":
        read = raster_module.RasterSource.read

        def timed_read(self, *window):
            start = time.perf_counter()
            data = read(self, *window)
            read_seconds[0] += time.perf_counter() - start
            return data

        raster_module.RasterSource.read = timed_read
    rss_before = _status_mib("VmRSS")
    _reset_peak_rss()
    cpu_start, start = time.process_time(), time.perf_counter()
    if args.path == "windowed":
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
    peak = _status_mib("VmHWM")
    digest = hashlib.sha256(np.ascontiguousarray(boxes).tobytes() + np.ascontiguousarray(scores).tobytes()).hexdigest()
    return {
        "seconds": seconds, "read_seconds": read_seconds[0], "peak_rss_mib": peak, "rss_before_mib": rss_before,
        "detections": len(boxes), "windows": windows, "digest": digest[:16], "cpu_seconds": cpu_seconds,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Driver


def spawn(path: str, size: int, dtype: str, files: dict, args) -> dict:
    out = Path(args.workdir) / "worker.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--path", path, "--raster", str(files[size]),
        "--dtype", dtype, "--weights", str(files["weights"]), "--calibration", str(files.get("calibration", "")),
        "--threads", str(args.threads), "--worker-out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f"worker {path} {size} {dtype} failed with exit code {proc.returncode}")
    return json.loads(out.read_text())


def summarize(runs: list) -> dict:
    """One row from the repeats of one (size, dtype, path): median time, largest peak."""
    return {
        "windows": runs[0]["windows"], "detections": runs[0]["detections"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "read_seconds": statistics.median(r["read_seconds"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "growth_mib": max(r["peak_rss_mib"] - r["rss_before_mib"] for r in runs),
        "digests": sorted({r["digest"] for r in runs}), "counts": sorted({r["detections"] for r in runs}),
        "cpu_use": min(r["cpu_seconds"] / r["seconds"] for r in runs),
    }  # fmt: skip


def table(rows: dict, sizes, dtypes) -> str:
    lines = [
        "| size | dtype | path | windows | detections | seconds | of which raster reads | s/megapixel | peak RSS MiB | RSS growth MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for dtype in dtypes:
            for path in PATHS:
                r = rows.get((size, dtype, path))
                if r is None:
                    continue
                lines.append(
                    f"| {size}² | {dtype} | {path} | {r['windows']} | {r['detections']} | {r['seconds']:.1f} | "
                    f"{r['read_seconds']:.1f} | {r['seconds'] / (size * size / 1e6):.4f} | {r['peak_rss_mib']:.0f} | {r['growth_mib']:.0f} |"
                )
    return "\n".join(lines)


def checks(rows: dict, sizes, dtypes) -> list:
    lines = []
    for size in sizes:
        for dtype in dtypes:
            a, b = rows.get((size, dtype, "windowed")), rows.get((size, dtype, "in memory"))
            if a and b:
                same = a["counts"] == b["counts"] and len(a["counts"]) == 1
                identical = a["digests"] == b["digests"] and len(a["digests"]) == 1
                lines.append(
                    f"check {size}² {dtype}: detections windowed {a['counts']} / in memory {b['counts']}: "
                    f"{'same' if same else 'DIFFERENT'}; boxes and scores {'identical' if identical else 'DIFFER'}"
                )
    return lines


def targets(rows: dict, sizes, dtypes) -> list:
    lines = []
    first, last = min(sizes), max(sizes)
    for dtype in dtypes:
        a, b = rows.get((first, dtype, "windowed")), rows.get((last, dtype, "windowed"))
        if a and b and first != last:
            growth = 100 * (b["peak_rss_mib"] / a["peak_rss_mib"] - 1)
            lines.append(
                f"{dtype}: peak memory windowed {first}² -> {last}²: {a['peak_rss_mib']:.0f} MiB -> "
                f"{b['peak_rss_mib']:.0f} MiB ({growth:+.1f} %), target <= 10 %: {'met' if growth <= 10 else 'not met'}"
            )
        ratios, cpu_ratios = [], []
        for size in sizes:
            w, m = rows.get((size, dtype, "windowed")), rows.get((size, dtype, "in memory"))
            if w and m:
                ratios.append((size, w["seconds"] / m["seconds"]))
                cpu_ratios.append((size, w["cpu_seconds"] / m["cpu_seconds"]))
        if ratios:
            # The windowed path must cost at most 10 % more per megapixel; faster is fine (the
            # in-memory path pays for holding and slicing one huge array).
            met = all(r <= 1.10 for _, r in ratios)
            text = ", ".join(f"{s}² {r:.3f}" for s, r in ratios)
            cpu_text = ", ".join(f"{s}² {r:.3f}" for s, r in cpu_ratios)
            lines.append(
                f"{dtype}: time per megapixel windowed / in memory at each size: {text}, "
                f"target <= 1.10: {'met' if met else 'not met'} (CPU time: {cpu_text})"
            )
    return lines


def contention(rows, threads) -> list:
    """
    A warning when a run got much less CPU time than its threads could use: another process
    held a core, and torch's threads then wait for each other at every op (with 2 threads and
    one core busy elsewhere, a window took 16x as long as with 1 thread).
    """
    slow = sorted(f"{s}² {d} {p} ({r['cpu_use']:.2f})" for (s, d, p), r in rows.items() if r["cpu_use"] < 0.8 * threads)
    if not slow:
        return []
    return ["", f"WARNING: CPU time below 0.8 x {threads} x wall (cores shared with other work), times not trustworthy: " + ", ".join(slow)]


def report(rows, sizes, dtypes, threads) -> str:
    parts = [table(rows, sizes, dtypes), "", *checks(rows, sizes, dtypes), "", *targets(rows, sizes, dtypes)]
    return "\n".join(parts + contention(rows, threads))


def run_driver(args) -> None:
    import rasterio

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    files = {size: ensure_raster(workdir, size) for size in sizes}
    files["weights"] = ensure_weights(workdir)
    if "int8" in args.dtypes:
        calibration_size = CALIBRATION_SIZE if CALIBRATION_SIZE in sizes else sizes[0]
        files["calibration"] = ensure_calibration(workdir, files["weights"], files[calibration_size])
    print(
        f"windows of {TILE} px, overlap {OVERLAP}, {TILE_BATCH} per forward; {args.threads} threads; "
        f"torch {torch.__version__}, rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__}; "
        f"load average {os.getloadavg()[0]:.2f}",
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
                        f"CPU time {r['cpu_seconds'] / r['seconds']:.2f} x wall, load average {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
    rows = {key: summarize(runs) for key, runs in results.items()}
    raw = [{"size": s, "dtype": d, "path": p, "runs": runs} for (s, d, p), runs in results.items()]
    (workdir / f"results_{args.threads}t.json").write_text(json.dumps(raw, indent=1))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print(report(rows, sizes, args.dtypes, args.threads))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 10240, 20480], help="sides of the square rasters")
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "int8"), default=["float32", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path (median time, largest peak)")
    parser.add_argument("--workdir", default="/tmp/retina_raster_bench", help="cache of rasters, weights, calibration")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--raster", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--calibration", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(run_worker(args)))
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
