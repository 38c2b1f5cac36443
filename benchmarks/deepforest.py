"""
DeepForest's `predict_tile` against tools/predict_raster.py's path (`RasterPredictor`) on the
same converted weights and the same GeoTIFFs (issue 27): seconds per megapixel and peak memory,
ours in float32 and int8, one run each, each in its own process.

    python benchmarks/deepforest.py [--threads 2] [--size 4096] [--weights DIR] [--workdir /tmp/retina_deepforest_bench]

Needs the peer venv (`bash scripts/setup_peers_venv.sh`, `.venv-peers/`), where DeepForest runs
through scripts/deepforest_peer.py. Rasters: a generated SIZE x SIZE 3-band GeoTIFF
(retina_plugin.geo.scenes, shapes of 10-20 px) and DeepForest's own data/OSBS_029.tif
(400 x 400). The model: --weights DIR, a DeepForest folder (benchmarks/deepforest_model.py
trains one), else a DeepForest tree model with random weights (seed 0; BN statistics and class
biases set so that scores spread around DeepForest's 0.1 threshold on the generated raster),
saved as DeepForest saves it; converted with retina_plugin.weights.convert; int8
ranges calibrated on 4 of the generated raster's windows as the network sees them (800 px).

Each run: the model built and loaded, one warm-up forward of each batch shape the timed call
runs (`warm_up`), then the timed call, whose reads are included (DeepForest reads the whole image
with PIL, ours reads window by window). Peak RSS is the process's VmHWM, reset when the timed call
starts. Checks: float32's detections equal DeepForest's as sets (IoU >= 0.999, score within 1e-4);
int8's recall at IoU 0.4 of float32's detections. Targets: float32 >= 1.5x DeepForest's speed,
int8 >= 4x with <= 1 % recall lost.

This file is the command line, the worker and the driver; deepforest_report.py the table.
"""
import argparse
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import torch

import harness
from deepforest_report import report

SEED = 0
CALIBRATION_WINDOWS = 4
PEERS_PYTHON = harness.ROOT / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = harness.ROOT / "scripts" / "deepforest_peer.py"
RUNTIMES = ("deepforest", "float32", "int8")


# ---------------------------------------------------------------------------------------------
# Worker: ours, one raster and dtype, in a fresh interpreter


def run_worker(args) -> dict:
    from retina_plugin.config import load_config
    from retina_plugin.data.raster import RasterSource
    from retina_plugin.geo.predict import RasterPredictor

    torch.set_num_threads(args.threads)
    opts = ["MODEL.DEVICE", "cpu", "MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", args.worker]
    if args.worker == "int8":
        opts += ["MODEL.RETINA_PLUGIN.INT8_CALIBRATION", args.calibration]
    predictor = RasterPredictor(load_config(args.config, opts))
    with RasterSource(args.raster, None, "RGB", 3) as source:
        warm_up(predictor.tiled, source)
    rss_before = harness.proc_status_mib("VmRSS")
    harness.reset_peak_rss()
    start = time.perf_counter()
    result = predictor.predict(args.raster, progress=False)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds, "peak_rss_mib": harness.proc_status_mib("VmHWM"), "rss_before_mib": rss_before,
        "windows": result.windows, "boxes": result.boxes.tolist(), "scores": result.scores.tolist(),
        "threads": torch.get_num_threads(),
    }  # fmt: skip


@torch.no_grad()
def warm_up(tiled, source) -> int:
    """
    One forward of each batch shape the timed call will run (oneDNN primitives, int8 packing, and
    the Winograd autotune, which measures each convolution shape, batch size included, on its
    first call): the raster's windows gathered into batches as `detect_tiles` gathers them (all
    nodata ones skipped), the first batch of each list of window sizes run. Returns how many ran.
    """
    from retina_plugin.inference.tiles import tile_grid

    tiles = tile_grid(source.height, source.width, tiled.tile_size, tiled.overlap).tolist()
    seen, pending = set(), []
    for position, (x0, y0, x1, y1) in enumerate(tiles):
        window = source.read(x0, y0, x1, y1)
        if window is not None:
            pending.append(torch.from_numpy(window).float())
        if len(pending) == tiled.tile_batch or (position == len(tiles) - 1 and pending):
            sizes = tuple(w.shape for w in pending)
            if sizes not in seen:
                seen.add(sizes)
                tiled.model([{"image": tiled.network_input(w), "height": w.shape[1], "width": w.shape[2]} for w in pending])
            pending = []
    return len(seen)


# ---------------------------------------------------------------------------------------------
# Driver


def run_peer(*args, threads: int) -> None:
    """scripts/deepforest_peer.py in the peer venv; its output shown when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(PEERS_PYTHON), str(PEER_SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"deepforest_peer.py failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")


def osbs_path() -> str:
    """DeepForest's own sample raster, from the installed package."""
    code = "import deepforest, os; print(os.path.join(os.path.dirname(deepforest.__file__), 'data', 'OSBS_029.tif'))"
    return subprocess.run([str(PEERS_PYTHON), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def prepare(args) -> dict:
    """The rasters, DeepForest's folder, the converted config and the int8 calibration in the workdir, made where missing."""
    from retina_plugin.geo.scenes import write_shapes_scene
    from retina_plugin.weights.convert import convert_to_plugin

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    generated = workdir / f"shapes_{args.size}.tif"
    scene = write_shapes_scene(str(generated), args.size, seed=SEED)  # cheap next to the runs; gives the objects
    files = {"generated": str(generated), "OSBS_029": osbs_path(), "objects": scene.boxes.tolist()}
    if args.weights:
        model_dir = Path(args.weights).resolve()
        if not (model_dir / "model.safetensors").is_file() or not (model_dir / "config.json").is_file():
            raise SystemExit(f"deepforest.py: error: --weights {model_dir}: not a DeepForest model folder (model.safetensors + config.json)")
    else:
        model_dir = workdir / f"deepforest_seed{SEED}"
        if not (model_dir / "model.safetensors").exists():
            run_peer(model_dir, "--save-random", "--seed", SEED, "--images", generated, "--torch-home", workdir / "torch_home", threads=args.threads)
    files["model"] = str(model_dir)
    cache = workdir / f"model_{model_fingerprint(model_dir)}"  # the converted model and calibration of these weights
    files["config"] = str(cache / "converted" / "config.yaml")
    if not Path(files["config"]).exists():
        convert_to_plugin("deepforest", str(model_dir), str(cache / "converted"))
    files["calibration"] = ensure_calibration(cache / f"int8_calibration_{args.size}.json", files["config"], str(generated))
    return files


def model_fingerprint(model_dir: Path) -> str:
    """The first 12 hex digits of the SHA-256 of a DeepForest folder's model.safetensors and config.json."""
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        with open(model_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def ensure_calibration(path: Path, config: str, raster: str) -> str:
    """int8 ranges of the converted float32 model on CALIBRATION_WINDOWS windows along the raster's diagonal, resized as at inference."""
    from retina_plugin.config import load_config
    from retina_plugin.data.raster import RasterSource
    from retina_plugin.geo.predict import RasterPredictor
    from retina_plugin.inference.int8 import calibrate_int8, save_int8_calibration, weights_fingerprint

    if path.exists():
        return str(path)
    predictor = RasterPredictor(load_config(config, ["MODEL.DEVICE", "cpu"]))
    tile = predictor.tiled.tile_size
    with RasterSource(raster, None, "RGB", 3) as source:
        step = (source.width - tile) // (CALIBRATION_WINDOWS - 1)
        windows = [torch.from_numpy(source.read(i * step, i * step, i * step + tile, i * step + tile)).float() for i in range(CALIBRATION_WINDOWS)]
    batches = [[{"image": predictor.tiled.network_input(w), "height": tile, "width": tile}] for w in windows]
    ranges = calibrate_int8(predictor.model, batches)
    save_int8_calibration(
        str(path), ranges, weights=predictor.cfg.MODEL.WEIGHTS, weights_fingerprint=weights_fingerprint(predictor.model),
        dataset=f"{raster} ({CALIBRATION_WINDOWS} windows of {tile} px, resized as TILE_RESIZE)", images=len(batches),
    )  # fmt: skip
    return str(path)


def run_deepforest(files: dict, raster: str, args) -> dict:
    out = Path(args.workdir) / "deepforest_result.json"
    run_peer(files["model"], "--predict-tile", raster, "--out", out, "--threads", args.threads, "--torch-home", Path(args.workdir) / "torch_home", threads=args.threads)
    r = json.loads(out.read_text())
    r["boxes"] = [list(b) for b in zip(r["xmin"], r["ymin"], r["xmax"], r["ymax"])]
    r["scores"] = r["score"]
    return r


def run_driver(args) -> None:
    import rasterio

    args.workdir = str(Path(args.workdir).resolve())
    files = prepare(args)
    model = f"{files['model']} (--weights)" if args.weights else f"random weights (seed {SEED})"
    print(f"{args.threads} threads; torch {torch.__version__}; model {model}; load average {harness.load_average():.2f}", flush=True)
    results = {}
    for name in ("generated", "OSBS_029"):
        with rasterio.open(files[name]) as source:
            megapixels = source.width * source.height / 1e6
        for runtime in RUNTIMES:
            if runtime == "deepforest":
                r = run_deepforest(files, files[name], args)
            else:
                worker_args = ["--raster", files[name], "--config", files["config"], "--calibration", files["calibration"], "--threads", args.threads]
                r = harness.spawn_worker(__file__, runtime, worker_args, Path(args.workdir) / "worker.json", {"OMP_NUM_THREADS": str(args.threads)})
            r["megapixels"] = megapixels
            results[(name, runtime)] = r
            print(
                f"  {name} {runtime:10s}: {len(r['scores'])} detections in {r['seconds']:.1f} s "
                f"({r['seconds'] / megapixels:.2f} s/megapixel), peak RSS {r['peak_rss_mib']:.0f} MiB; "
                f"load average {harness.load_average():.2f}",
                flush=True,
            )
    summary, table = report(results, files["objects"], args.threads, model, trained=bool(args.weights))
    harness.write_results(args.out, f"deepforest_{args.threads}t", summary, table)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=4096, help="side of the generated raster")
    parser.add_argument(
        "--weights", metavar="DIR",
        help="a DeepForest model folder (model.safetensors + config.json), e.g. benchmarks/deepforest_model.py's trained "
        "one (default: a random model, seed 0)",
    )  # fmt: skip
    parser.add_argument("--workdir", default="/tmp/retina_deepforest_bench", help="cache of the rasters, model, calibration")
    parser.add_argument("--out", default=str(harness.ROOT / "benchmarks" / "results"))
    harness.add_worker_arguments(parser, RUNTIMES[1:], inputs=("raster", "config", "calibration"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    harness.main(parse_args(), run_worker, run_driver)
