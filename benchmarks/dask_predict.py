"""
tools/predict_raster.py's in-process loop against its Dask path (issue 29): seconds per
megapixel and peak memory per worker, on generated GeoTIFFs.

    python benchmarks/dask_predict.py [--count 16] [--size 2048] [--scene 16384] [--threads 2]
        [--runs loop 1x2 2x1] [--block-windows 8] [--workdir /tmp/retina_dask_bench]

Each run in a fresh interpreter (`--worker RUN`), over the same `--count` rasters of `--size`²
(hard links of one generated raster: same pixels, distinct paths, distinct tasks) and, with
`--scene`, one large scene:

  loop   `predict_rasters(cfg, paths, out)`, torch on --threads threads
  WxT    `predict_rasters_on_dask(..., workers=W, threads_per_worker=T)`: a LocalCluster of W
         processes x T task threads, torch on one thread per task (OMP_NUM_THREADS 1); a fresh
         parts folder, so every block runs

The timed part is the whole call: building and loading the model (once per worker on Dask),
starting the cluster, every raster read, the merge and the write. Peak memory is VmHWM: the
loop's own process; on Dask each worker process's, polled every 0.1 s from /proc (VmHWM only
grows, so the last poll is its peak to within 0.1 s of its end). The model is raster.py's
(configs/scenes_narrow_R50_cpu.yaml, random weights, 20 detections per 512-px window).
"""
import argparse
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

import psutil

import harness
from raster_inputs import ensure_raster, ensure_weights, model_config


def vm_hwm_mib(process) -> float:
    with open(f"/proc/{process.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class WorkerPeaks:
    """Polls the VmHWM of this process's child processes (the Dask workers) until stopped."""

    def __init__(self):
        self.peaks, self.done = {}, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        me = psutil.Process()
        while not self.done.wait(0.1):
            for child in me.children(recursive=True):
                try:
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), vm_hwm_mib(child))
                except (OSError, psutil.Error):
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


class ReadyTime(logging.Handler):
    """The seconds of dask_predict's "Dask worker(s) ready ... in X s" line: cluster start and model loads."""

    seconds = 0.0

    def emit(self, record):
        found = re.search(r"worker\(s\) ready, .* in ([\d.]+)s", record.getMessage())
        if found:
            self.seconds = float(found.group(1))


def run_worker(args) -> dict:
    import torch

    from retina_plugin.geo.predict import predict_rasters

    paths = args.paths.split(",")
    cfg = model_config(args.weights)
    out = Path(args.workdir) / f"dets_{args.worker}.gpkg"
    shutil.rmtree(f"{out}.parts", ignore_errors=True)
    start = time.perf_counter()
    if args.worker == "loop":
        torch.set_num_threads(args.threads)
        detections = predict_rasters(cfg, paths, str(out), progress=False)
        peaks = [harness.proc_status_mib("VmHWM")]
        startup = 0.0
    else:
        from retina_plugin.geo.dask_predict import predict_rasters_on_dask

        workers, threads = map(int, args.worker.split("x"))
        ready = ReadyTime()
        logging.getLogger("predict_raster").addHandler(ready)
        logging.getLogger("predict_raster").setLevel(logging.INFO)
        with WorkerPeaks() as polled:
            detections = predict_rasters_on_dask(
                cfg, paths, str(out), progress=False, workers=workers, threads_per_worker=threads,
                block_windows=args.block_windows,
            )  # fmt: skip
        peaks = sorted(polled.peaks.values(), reverse=True)[:workers]
        startup = ready.seconds
    seconds = time.perf_counter() - start
    digest = hashlib.sha256()
    for d in detections:
        digest.update(d.boxes.round(2).tobytes())
    megapixels = sum(d.width * d.height for d in detections) / 1e6
    return {"seconds": seconds, "startup": startup, "megapixels": megapixels, "peaks_mib": peaks, "digest": digest.hexdigest()[:12],
            "detections": sum(len(d.boxes) for d in detections), "windows": sum(d.windows for d in detections)}  # fmt: skip


def prepare(args) -> list:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = ensure_raster(workdir, args.size)
    paths = []
    for i in range(args.count):
        path = workdir / f"raster_{i:02d}.tif"
        if not path.exists():
            os.link(source, path)
        paths.append(str(path))
    if args.scene:
        paths.append(str(ensure_raster(workdir, args.scene)))
    return paths


def run_driver(args):
    paths = prepare(args)
    weights = ensure_weights(Path(args.workdir))
    rows = []
    for run in args.runs:
        worker_args = ["--paths", ",".join(paths), "--weights", weights, "--workdir", args.workdir,
                       "--threads", args.threads, "--block-windows", args.block_windows]  # fmt: skip
        env = {"OMP_NUM_THREADS": str(args.threads if run == "loop" else 1)}
        r = harness.spawn_worker(__file__, run, worker_args, Path(args.workdir) / "worker.json", env)
        rows.append((run, r))
        print(f"{run}: {r['seconds']:.1f} s, {r['seconds'] / r['megapixels']:.3f} s/megapixel, peak MiB per worker "
              f"{[round(p) for p in r['peaks_mib']]}, {r['detections']} detections, digest {r['digest']}", flush=True)  # fmt: skip
    loop = dict(rows).get("loop")
    print(f"\n{len(paths)} rasters, {rows[0][1]['megapixels']:.1f} megapixels, {rows[0][1]['windows']} windows; load {harness.load_average()}")
    print("| run (workers x threads) | seconds | s/megapixel | vs loop | of which cluster start + model loads (s) | s/megapixel without them | peak RSS per worker (MiB) | same detections |")
    print("|---|---|---|---|---|---|---|---|")
    for run, r in rows:
        ratio = f"{r['seconds'] / loop['seconds']:.2f}x" if loop else "-"
        same = "yes" if loop and r["digest"] == loop["digest"] else ("-" if not loop else "NO")
        peaks = ", ".join(str(round(p)) for p in r["peaks_mib"])
        rest = (r["seconds"] - r["startup"]) / r["megapixels"]
        print(f"| {run} | {r['seconds']:.1f} | {r['seconds'] / r['megapixels']:.3f} | {ratio} | {r['startup']:.1f} | {rest:.3f} | {peaks} | {same} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--scene", type=int, default=0, help="also one scene of this side (the issue's: 16384)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block-windows", type=int, default=8)
    parser.add_argument("--runs", nargs="+", default=["loop", "1x2", "2x1"])
    parser.add_argument("--workdir", default="/tmp/retina_dask_bench")
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    harness.add_worker_arguments(parser)
    harness.main(parser.parse_args(), run_worker, run_driver)


if __name__ == "__main__":
    main()
