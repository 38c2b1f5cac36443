"""
Speed, memory and FLOP comparison of three RetinaNet R50-FPN implementations on one machine:

  ours         retina_plugin's RetinaNetPlugin (configs/retinanet_R50.yaml, random weights)
  detectron2   Detectron2's built-in RetinaNet, holding the same weights as ours
  torchvision  torchvision's RetinaNet R50-FPN (v1), random weights

    python benchmarks/bench.py [--device cpu|cuda] [--threads N] [--repeats 5] [--quick]
                               [--no-runtimes] [--out benchmarks/results]

Each measurement runs in fresh subprocesses of this script (`--worker`): one holding all three
models times them in turns; one per model measures its peak memory alone. All use the same
seed, hence the same weights and images. benchmarks/README.md says what each row means.

On the CPU it then runs runtimes.py (in its own process): ours against ONNX Runtime and
OpenVINO in float32 and int8, with the int8 paths' AP, when the `bench` extra is installed
(`make bench`).

This file is the command line, the driver and the worker; the rest is in its sibling modules:
harness.py (the worker processes, results files, machine name), inputs.py (images), models.py
(the three models), adapters.py (running each), tasks.py (the six measurements), measure.py
(time, memory, FLOPs, machine limit), report.py (table, notes).
"""
import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch

import harness
from adapters import ADAPTERS, build_adapters
from measure import machine_limit, run_memory, run_timing
from models import MODELS, ROOT
from report import markdown, summarize
from tasks import MEASUREMENTS, OURS_ONLY, TASKS, WARMUP

RUNTIMES_NEEDS = ("onnx", "onnxruntime", "openvino", "nncf")


def run_worker(args):
    torch.set_num_threads(args.threads)
    if args.mode == "memory":
        adapter = ADAPTERS[args.worker](args.device)
        return run_memory(TASKS[args.measure](adapter, args), args)
    adapters = build_adapters(args.device)
    models = ["ours"] if args.measure in OURS_ONLY else MODELS
    tasks = {m: TASKS[args.measure](adapters[m], args) for m in models}
    return run_timing(tasks, WARMUP[args.measure], args)


def spawn_worker(model, measure, mode, args, tmpdir):
    """
    Run `measure` in a fresh process: mode "time" for all models (`model` "all"),
    mode "memory" for one model.
    """
    env = {}
    if mode == "memory":
        # A fixed mmap threshold returns every large freed block to the OS at once, so RSS
        # follows the live tensors: without it glibc's adaptive threshold and per-thread
        # arenas make peak RSS vary by ~200 MiB between identical runs. Timing runs keep the
        # default allocator (this setting makes them up to ~40% slower).
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    worker_args = ["--measure", measure, "--mode", mode, "--device", args.device, "--threads", args.threads, "--repeats", args.repeats]
    return harness.spawn_worker(__file__, model, worker_args, Path(tmpdir) / f"{model}-{measure}-{mode}.json", env)


def run_driver(args):
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    info = harness.machine_info(args.device, args.threads)
    load_at_start = harness.load_average()
    print(f"{harness.machine_name(info)}: {info['cpu_model']}, {args.threads} threads, repeats {args.repeats}", flush=True)
    limit = machine_limit(args.device)
    print(f"machine limit: {limit['gflop_per_s']:.0f} GFLOP/s", flush=True)

    results = {m: {} for m in MODELS}
    with tempfile.TemporaryDirectory() as tmpdir:
        for measure in MEASUREMENTS:
            timings = spawn_worker("all", measure, "time", args, tmpdir)
            for model in timings:
                r = results[model][measure] = timings[model]
                r.update(spawn_worker(model, measure, "memory", args, tmpdir))
                t = harness.stats(r["times"])
                print(
                    f"  {measure:14s} {model:12s} median {t['median']:.4f} s, "
                    f"min {t['min']:.4f} s, peak {r['peak_mib']:.0f} MiB",
                    flush=True,
                )

    summary = summarize(results, limit, info, args, time.perf_counter() - start)
    summary["load_average_1min"] = {"start": load_at_start, "end": harness.load_average()}
    harness.write_results(args.out, harness.machine_name(info), summary, markdown(summary))
    if args.device == "cpu" and not args.no_runtimes:
        run_runtimes(args)


def run_runtimes(args):
    """runtimes.py's table (ours against ONNX Runtime and OpenVINO), or a line saying what it needs."""
    missing = [m for m in RUNTIMES_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        print(f"\nruntimes rows skipped: {', '.join(missing)} not installed (`make bench` or `pip install -e .[bench]`)")
        return
    print("\nAgainst the deployment runtimes (runtimes.py):", flush=True)
    script = Path(__file__).resolve().parent / "runtimes.py"
    harness.run_script(script, ["--threads", args.threads, "--repeats", args.repeats, "--out", args.out])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="2 repeats (for development)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-runtimes", action="store_true", help="skip runtimes.py (ONNX Runtime, OpenVINO) after the table")
    harness.add_worker_arguments(parser, MODELS + ("all",))
    parser.add_argument("--measure", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    return args


if __name__ == "__main__":
    harness.main(parse_args(), run_worker, run_driver)
