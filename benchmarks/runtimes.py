"""
RetinaNetPlugin R50-FPN (bench.py's weights) against the runtimes CPU users deploy it with:
ONNX Runtime and OpenVINO, in float32 and int8, on one 800x1216 image, same thread count.

    python benchmarks/runtimes.py [--quick] [--repeats 5] [--threads 2] [--no-ap] [--out benchmarks/results]

Needs the `bench` extra (`make bench`, or `pip install -e .[bench]`: openvino, nncf).

Preparation (this process, runtime_export.py): ours' weights; the whole detector exported to
ONNX with the project's export (retina_plugin.deploy.export, as `tools/export_model.py
--format onnx`), traced on the timed image; from it, the graph of the network alone (image ->
normalization, padding, backbone, head -> per-level logits and deltas), cut at the head's
outputs with onnx.utils.extract_model.
Calibrated on the same two images as ours' int8 (tasks.INT8_CALIBRATION_SEEDS), that network is
quantized by `onnxruntime.quantization.quantize_static` (QDQ, int8 weights per channel, uint8
activations) and by `nncf.quantize` (OpenVINO). Decoding and NMS stay float everywhere: the
onnxruntime quantizer fails on the postprocess part of the graph.

Each row runs in its own worker process (`--worker ROW`; a runtime loaded beside torch slows
torch down), one after the other, for `--repeats` rounds: a worker loads its model, makes one
untimed call and times two, per part, and reports their median. The table gives the median (min) over
the rounds. Two parts are timed:

  network   image -> head outputs: the part every int8 path quantizes, timed for every row
  detector  image -> detections: the whole model (float32 rows; no int8 export exists for the
            runtimes, whose int8 network would need the float postprocess of another library)

Every row's head outputs go through ours' float postprocess (DecodeAndNMS) in the driver, for
the agreement columns: an int8 row against its own float32, a float32 runtime against ours.

The accuracy of the int8 paths, which random weights cannot show, follows from int8_ap.py:
the COCO AP on the embedded val split of `make run`'s trained model (skipped, with a line
saying so, when its weights are missing; `--no-ap` skips it).

bench.py runs this script after its own table when the bench extra is installed. The rows and
their runners are in runners.py, the table and notes in runtimes_report.py.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import harness
from int8_ap_rows import DEFAULT_WEIGHTS, int8_ap_rows
from runners import CALLS, ROWS, RUNNERS, WARMUP, timed_image
from runtime_export import prepare
from runtimes_report import agreement, markdown

ROOT = harness.ROOT


def run_worker(args):
    start = time.perf_counter()
    runner = RUNNERS[args.worker](args.worker, args.workdir, args.threads)
    result = {"load_s": time.perf_counter() - start, "compile_s": getattr(runner, "compile_s", None)}
    image = timed_image()
    for part in runner.parts:
        fn = getattr(runner, part)
        for _ in range(WARMUP):
            out = fn(image)
        times = []
        for _ in range(CALLS):
            t = time.perf_counter()
            fn(image)
            times.append(time.perf_counter() - t)
        result[part] = harness.stats(times)["median"]
        if args.save_outputs:
            np.savez(Path(args.workdir) / f"{args.worker}-{part}.npz", *out)
    return result


def spawn_worker(row, args, workdir, save_outputs):
    worker_args = ["--workdir", workdir, "--threads", args.threads] + (["--save-outputs"] if save_outputs else [])
    return harness.spawn_worker(__file__, row, worker_args, Path(workdir) / f"{row}.json")


def run_driver(args):
    import torch

    start = time.perf_counter()
    load_at_start = harness.load_average()
    rows = list(ROWS)
    with tempfile.TemporaryDirectory() as workdir:
        model = prepare(workdir, lambda s: print(s, flush=True))
        rounds = {row: [] for row in rows}
        for r in range(args.repeats):
            for row in rows:
                result = spawn_worker(row, args, workdir, save_outputs=r == 0)
                rounds[row].append(result)
                parts = ", ".join(f"{p} {result[p]:.3f} s" for p in ("network", "detector") if p in result)
                print(f"  round {r + 1}/{args.repeats} {row:17s} {parts}", flush=True)
        torch.set_num_threads(args.threads)
        agree = agreement(model, workdir, rows)
        ap_rows = int8_accuracy(args, Path(workdir) / "ap")

    info = harness.machine_info("cpu", args.threads)
    summary = {"machine": info, "threads": args.threads, "repeats": args.repeats, "rounds": rounds, "agreement": agree, "int8_ap": ap_rows,
               "seconds": time.perf_counter() - start, "load_average_1min": {"start": load_at_start, "end": harness.load_average()}}  # fmt: skip
    harness.write_results(args.out, f"runtimes_{harness.machine_name(info)}", summary, markdown(summary))


def int8_accuracy(args, workdir):
    """int8_ap.py's rows (AP of every int8 path on the embedded val split), or None without `make run`'s weights."""
    if args.no_ap:
        return None
    if not DEFAULT_WEIGHTS.is_file():
        print(f"AP rows skipped: {DEFAULT_WEIGHTS.relative_to(ROOT)} not found (`make run` trains it)", flush=True)
        return None
    workdir.mkdir()
    start = time.perf_counter()
    rows = int8_ap_rows(DEFAULT_WEIGHTS, args.threads, workdir, lambda s: print(f"  AP: {s}", flush=True))
    return {"rows": rows, "seconds": time.perf_counter() - start}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    parser.add_argument("--repeats", type=int, default=5, help="worker runs per row, taking turns")
    parser.add_argument("--quick", action="store_true", help="2 rounds (for development)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-ap", action="store_true", help="skip the int8 paths' AP (int8_ap.py, ~1 min)")
    harness.add_worker_arguments(parser, list(ROWS))
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--save-outputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    return args


if __name__ == "__main__":
    harness.main(parse_args(), run_worker, run_driver)
