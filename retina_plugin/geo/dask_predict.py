"""
Prediction over many rasters on Dask (`distributed`): tools/predict_raster.py with --workers N
(a LocalCluster on this machine) or --scheduler ADDRESS (a running cluster: dask-jobqueue on
SLURM/PBS, a Kubernetes operator, `dask scheduler` + `dask worker` by hand).

One task per (raster, block of windows) (blocks.py). Each worker builds and loads the model once
(`ModelPlugin`, registered once per worker: the config and the weights' path are shipped, the
weights read there) and keeps it for all its tasks. A task writes its block's detections as one
part (parts.py); the client then merges the parts of each raster as tiled inference merges its
tiles, and writes the output through OutputSet, as the single-process run does. A rerun skips
the finished parts; a worker killed mid-task has its task run again elsewhere.

This module imports Dask; nothing on the single-process path imports it.
"""
import contextlib
import logging
import os
import time
from types import SimpleNamespace
from typing import List, Optional, Sequence

import dask
import torch
from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin
from tabulate import tabulate
from tqdm import tqdm

from ..data.output_files import OutputSet
from ..data.raster import RasterSource
from .blocks import detect_block, merge_blocks, raster_blocks
from .parts import PartsFolder, read_part, run_settings, write_part
from ..config import ConfigError
from ..modeling.box_transform import box_dim
from ..inference.predictor import dataset_metadata
from ..inference.tiling_checks import check_tile_merge
from .predict import RasterPredictor, detections_to_frame, write_outputs
from .vectors import vector_driver

__all__ = ["ModelPlugin", "predict_rasters_on_dask"]

logger = logging.getLogger("predict_raster")

PLUGIN_NAME = "retina_plugin-model"


class ModelPlugin(WorkerPlugin):
    """Builds the model of `cfg` (RasterPredictor: weights, precision, TTA) once per worker, at its start."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.predictor = None

    def setup(self, worker):
        self.predictor = RasterPredictor(self.cfg)


def predict_block(path: str, block: int, tile_indices: List[int], part: str) -> dict:
    """
    The task: detect in the tiles `tile_indices` of raster `path` with this worker's model and
    write them as the part `part`. Returns the part's attrs (windows, skipped, seconds, ...).
    """
    if os.path.exists(part):  # written by an earlier attempt whose worker died after the rename
        return read_part(part)["attrs"]
    predictor = get_worker().plugins[PLUGIN_NAME].predictor
    start = time.perf_counter()
    with predictor.open(path) as source, source.window_reading_env(predictor.tiled.tile_size):

        def read(x0, y0, x1, y1):
            window = source.read(x0, y0, x1, y1)
            if window is None:
                return None
            tensor = torch.from_numpy(window)
            return tensor if tensor.dtype == torch.uint8 else tensor.float()

        found = detect_block(predictor.tiled, read, source.height, source.width, tile_indices)
        transform, crs = source.transform, source.crs
    attrs = {
        "raster": path, "block": block, "windows": len(tile_indices), "skipped": found["skipped"],
        "detections": len(found["scores"]), "seconds": time.perf_counter() - start,
        "class_names": list(predictor.model.class_names or []), "worker_pid": os.getpid(),
        # How the tiles merge, as the model that ran them was built (merge_blocks).
        "tile_merge": predictor.tiled.merge, "tile_nms_thresh": predictor.tiled.nms_thresh,
        "tiled_detections_per_image": predictor.tiled.detections_per_image,
    }  # fmt: skip
    write_part(part, found, attrs, transform, crs)
    return attrs


@contextlib.contextmanager
def dask_client(workers: Optional[int], threads_per_worker: Optional[int], scheduler: Optional[str]):
    """
    A Client of the running cluster at `scheduler` (left running at the end), or of a
    LocalCluster of `workers` processes on loopback (closed at the end).
    """
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns off glibc's adaptive
    # mmap threshold: every large convolution buffer is then mapped and unmapped anew, and the
    # model ran 1.7x slower (docs/distributed_prediction.md). None unsets it.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), LocalCluster(
        n_workers=workers, threads_per_worker=threads_per_worker or 1, processes=True,
        host="127.0.0.1", dashboard_address=None,
    ) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def run_tasks(client: Client, tasks: list, total_windows: int, done_windows: int, progress: bool) -> None:
    """Run `tasks` (path, block, tile indices, part) on `client`, one bar over all windows."""
    bar = tqdm(total=total_windows, initial=done_windows, unit="window", desc="rasters", disable=not progress, mininterval=1.0)
    futures = {
        client.submit(predict_block, *task, key=f"predict_block-{os.path.basename(task[3])}", pure=False): task
        for task in tasks
    }
    with bar:
        for future in as_completed(futures):
            future.result()  # a task's error (a UserError on a worker too) stops the run here
            bar.update(len(futures[future][2]))


def raster_detections(path: str, source: RasterSource, parts: List[dict], class_thresholds) -> SimpleNamespace:
    """One raster's detections (as RasterPredictor.predict returns them) merged from all its parts."""
    tiling = parts[0]["attrs"]  # the parts of a run share their settings (parts.PartsFolder)
    merged = merge_blocks(
        parts, tiling["tile_nms_thresh"], tiling["tiled_detections_per_image"], class_thresholds, tiling["tile_merge"]
    )
    windows = sum(p["attrs"]["windows"] for p in parts)
    skipped = sum(p["attrs"]["skipped"] for p in parts)
    return SimpleNamespace(
        path=path, boxes=merged["boxes"], scores=merged["scores"], classes=merged["classes"], crs=source.crs,
        transform=source.transform, width=source.width, height=source.height, windows=windows,
        windows_skipped=skipped, windows_run=windows - skipped, seconds=sum(p["attrs"]["seconds"] for p in parts),
    )  # fmt: skip


def check_class_names(cfg, output: str, class_names) -> None:
    """A bad output name or a wrong number of --classes, before anything runs (as predict_rasters checks them)."""
    vector_driver(output)
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"--classes names {len(class_names)} class(es) {list(class_names)} but the model has {num_classes} (MODEL.RETINANET.NUM_CLASSES)")


def predict_rasters_on_dask(
    cfg, paths: Sequence[str], output: str, coco_json=None, class_names=None, class_thresholds=None, progress=True,
    *, workers: Optional[int] = None, threads_per_worker: Optional[int] = None, scheduler: Optional[str] = None,
    block_windows: int = 8,
):  # fmt: skip
    """
    As `retina_plugin.geo.predict.predict_rasters`, the (raster, block) tasks run on Dask and
    kept as parts in `<output>.parts/` (see the module docstring). Returns the per-raster
    detection namespaces.
    """
    check_class_names(cfg, output, class_names)
    node = cfg.MODEL.RETINA_PLUGIN
    check_tile_merge(node.TILE_MERGE, box_dim(cfg))  # here, not when each worker builds its model
    sources = {}
    for path in paths:  # bad bands or an unreadable file fail before anything runs
        with RasterSource(path, list(node.RASTER_BANDS) or None, cfg.INPUT.FORMAT, len(cfg.MODEL.PIXEL_MEAN)) as source:
            sources[path] = source
    with OutputSet(output, coco_json) as out:
        parts = PartsFolder(output, run_settings(cfg, class_thresholds, block_windows))
        parts.open()
        tasks, done, total_windows, done_windows = [], 0, 0, 0
        plan = {}
        for path, source in sources.items():
            blocks = raster_blocks(source.height, source.width, node.TILE_SIZE, node.TILE_OVERLAP, block_windows)
            plan[path] = [parts.part(path, b) for b in range(len(blocks))]
            for b, (tiles, part) in enumerate(zip(blocks, plan[path])):
                total_windows += len(tiles)
                if os.path.exists(part):
                    done, done_windows = done + 1, done_windows + len(tiles)
                else:
                    tasks.append((path, b, tiles, part))
        logger.info(f"{done} of {done + len(tasks)} parts already done in {parts.root}; running {len(tasks)}")
        if tasks:
            start = time.perf_counter()
            with dask_client(workers, threads_per_worker, scheduler) as client:
                client.register_plugin(ModelPlugin(cfg), name=PLUGIN_NAME)
                ready = len(client.scheduler_info()["workers"])
                logger.info(f"{ready} Dask worker(s) ready, the model loaded on each, in {time.perf_counter() - start:.1f}s")
                run_tasks(client, tasks, total_windows, done_windows, progress)
            parts.remove_temporaries()
        detections, frames = [], []
        loaded = {path: [read_part(p) for p in plan[path]] for path in paths}
        own = next((p["attrs"]["class_names"] for ps in loaded.values() for p in ps if p["attrs"]["class_names"]), None)
        if class_names is not None and own and list(class_names) != list(own):
            logger.warning(f"--classes {list(class_names)} relabel the classes the checkpoint names {list(own)}")
        metadata = dataset_metadata(cfg, class_names or own)
        names = list(metadata.get("thing_classes", None) or [])
        for path in paths:
            detections.append(raster_detections(path, sources[path], loaded[path], class_thresholds))
            frames.append(detections_to_frame(detections[-1], names))
        write_outputs(out, output, coco_json, detections, frames, metadata)
    logger.info("per raster:\n" + tabulate(
        [(d.path, d.windows, len(d.boxes), f"{d.seconds:.1f}", d.windows_skipped) for d in detections],
        headers=["raster", "windows", "detections", "seconds", "skipped nodata"],
    ))  # fmt: skip
    return detections
