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

On the CPU it then runs runtimes.py: ours against ONNX Runtime and OpenVINO in float32 and
int8, with the int8 paths' AP, when the `bench` extra is installed (`make bench`).

This file is the command line and the driver; the rest is in its sibling modules: inputs.py
(images), models.py (the three models), adapters.py (running each), tasks.py (the six
measurements), measure.py (time, memory, FLOPs, machine limit), report.py (table, notes).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from adapters import ADAPTERS, build_adapters
from measure import machine_limit, run_memory, run_timing
from models import MODELS, ROOT
from report import machine_info, machine_name, markdown, summarize
from tasks import MEASUREMENTS, OURS_ONLY, TASKS, WARMUP


def run_worker(args):
    torch.set_num_threads(args.threads)
    if args.mode == "memory":
        adapter = ADAPTERS[args.worker](args.device)
        result = run_memory(TASKS[args.measure](adapter, args), args)
    else:
        adapters = build_adapters(args.device)
        models = ["ours"] if args.measure in OURS_ONLY else MODELS
        tasks = {m: TASKS[args.measure](adapters[m], args) for m in models}
        result = run_timing(tasks, WARMUP[args.measure], args)
    Path(args.worker_out).write_text(json.dumps(result))


def spawn_worker(model, measure, mode, args, tmpdir):
    """
    Run `measure` in a fresh process: mode "time" for all models (`model` "all"),
    mode "memory" for one model.
    """
    out = Path(tmpdir) / f"{model}-{measure}-{mode}.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--worker", model, "--measure", measure, "--mode", mode, "--worker-out", str(out),
        "--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if mode == "memory":
        # A fixed mmap threshold returns every large freed block to the OS at once, so RSS
        # follows the live tensors: without it glibc's adaptive threshold and per-thread
        # arenas make peak RSS vary by ~200 MiB between identical runs. Timing runs keep the
        # default allocator (this setting makes them up to ~40% slower).
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"worker {model}/{measure} failed with exit code {proc.returncode}")
    return json.loads(out.read_text())


def run_driver(args):
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    info = machine_info(args)
    load_at_start = os.getloadavg()
    print(f"{machine_name(info)}: {info['cpu_model']}, {args.threads} threads, repeats {args.repeats}", flush=True)
    limit = machine_limit(args.device)
    print(f"machine limit: {limit['gflop_per_s']:.0f} GFLOP/s", flush=True)

    results = {m: {} for m in MODELS}
    with tempfile.TemporaryDirectory() as tmpdir:
        for measure in MEASUREMENTS:
            timings = spawn_worker("all", measure, "time", args, tmpdir)
            for model in timings:
                r = results[model][measure] = timings[model]
                r.update(spawn_worker(model, measure, "memory", args, tmpdir))
                print(
                    f"  {measure:14s} {model:12s} median {statistics.median(r['times']):.4f} s, "
                    f"min {min(r['times']):.4f} s, peak {r['peak_mib']:.0f} MiB",
                    flush=True,
                )

    summary = summarize(results, limit, info, args, time.perf_counter() - start)
    summary["load_average_1min"] = {"start": load_at_start[0], "end": os.getloadavg()[0]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = machine_name(info)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown(summary)
    (out / f"{name}.md").write_text(table)
    print()
    print(table)
    print(f"wrote {out / name}.json and .md")
    if args.device == "cpu" and not args.no_runtimes:
        run_runtimes(args)


def run_runtimes(args):
    """runtimes.py's table (ours against ONNX Runtime and OpenVINO), or a line saying what it needs."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "openvino", "nncf") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"\nruntimes rows skipped: {', '.join(missing)} not installed (`make bench` or `pip install -e .[bench]`)")
        return
    import runtimes

    print("\nAgainst the deployment runtimes (runtimes.py):", flush=True)
    runtimes.run_driver(runtimes.parse_args(["--threads", str(args.threads), "--repeats", str(args.repeats), "--out", args.out]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="2 repeats (for development)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-runtimes", action="store_true", help="skip runtimes.py (ONNX Runtime, OpenVINO) after the table")
    parser.add_argument("--worker", choices=MODELS + ("all",), help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    return args


def main():
    args = parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
