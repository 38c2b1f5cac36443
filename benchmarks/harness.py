"""
The driver/worker scaffolding of the benchmarks that measure in fresh interpreters (bench.py,
runtimes.py, raster.py, int8_profile.py): a driver runs its own script again as a worker
(`--worker NAME ... --worker-out FILE`), the worker measures one thing and writes one JSON
object to FILE, the driver collects them, summarizes the times and writes
`<out>/<name>.json` and `.md`. Also: the machine's description and name, library versions,
the process's RSS (peak and current) and another script run after a driver's own table.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FAILED_OUTPUT_CHARS = 6000  # of a failed worker's stdout and of its stderr, printed by the driver


# ---- driver and worker ------------------------------------------------------------------

def add_worker_arguments(parser, choices=None, inputs=()):
    """
    The worker's hidden arguments: what it measures (`--worker`), the JSON file it writes and
    `--NAME` for each of `inputs`, the files the driver prepared for it (a raster, weights, ...).
    """
    parser.add_argument("--worker", choices=choices, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    for name in inputs:
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)


def main(args, run_worker, run_driver):
    """As a worker (`--worker` given): run_worker(args)'s dict into --worker-out; else the driver."""
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(run_worker(args)))
    else:
        run_driver(args)


def spawn_worker(script, worker, worker_args, out, env=None):
    """
    `script --worker worker *worker_args --worker-out out` in a fresh interpreter, from the
    repository root, with `env` over this process's environment; the dict it wrote. A failed
    worker's output goes to stderr and raises RuntimeError.
    """
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", worker, *map(str, worker_args), "--worker-out", str(out)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-FAILED_OUTPUT_CHARS:] + proc.stderr[-FAILED_OUTPUT_CHARS:])
        raise RuntimeError(f"worker {worker} {' '.join(map(str, worker_args))} failed with exit code {proc.returncode}")
    return json.loads(Path(out).read_text())


def run_script(script, script_args):
    """Another benchmark script in its own process, its output printed with ours (raises if it fails)."""
    sys.stdout.flush()
    subprocess.run([sys.executable, str(Path(script).resolve()), *map(str, script_args)], check=True)


def stats(values):
    """{"median", "min", "max"} of a sequence of numbers (the times of repeated runs)."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def load_average():
    """The 1-minute load average: outside load makes every time longer, so reports give it."""
    return os.getloadavg()[0]


def write_results(out, name, summary, table):
    """`out/name.json` (the summary) and `out/name.md` (the table under the machine's CPU line), then print them."""
    threads = summary.get("threads") or summary.get("machine", {}).get("threads")
    table = f"{machine_line(threads)}\n\n{table}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / f"{name}.md").write_text(table)
    print()
    print(table)
    print(f"wrote {out / name}.json and .md")


# ---- the machine ------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads=None):
    """The line every table is printed under: the CPU model, the extensions its kernels use, the thread count."""
    from retina_plugin.modeling.winograd_tuning import KERNEL_FLAGS, cpu_model as cpu_and_flags

    model, flags = cpu_and_flags()
    flags = ", ".join(flags) or "none of " + ", ".join(KERNEL_FLAGS)
    threads = f", {threads} threads" if threads else ""
    return f"**CPU:** {model} ({flags}; {os.cpu_count()} cores{threads}), torch {torch.__version__}"


def machine_info(device, threads):
    """The machine, the device and thread count, and the versions of python, torch, torchvision, detectron2."""
    import detectron2
    import torchvision

    info = {
        "node": platform.node(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "device": device,
        "threads": threads, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "detectron2": detectron2.__version__,
    }  # fmt: skip
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_name(info):
    """The results files' name: the CPU model (CUDA: the GPU) and, on the CPU, the thread count."""

    def clean(s):
        s = re.sub(r"\((r|tm)\)", "", s.lower())
        return re.sub(r"[^a-z0-9]+", "-", s).strip("-")

    if info["device"].startswith("cuda"):
        return f"{clean(info['gpu'])}_cuda"
    return f"{clean(info['cpu_model'])}_cpu-{info['threads']}t"


def library_versions(names=("onnxruntime", "openvino", "nncf")):
    """"name version, ..." of installed distributions ("name missing" for the others)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


# ---- process memory (Linux) -------------------------------------------------------------

def proc_status_mib(field):
    """A /proc/self/status memory field (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss():
    """Reset VmHWM to the current RSS (raises OSError where /proc/self/clear_refs is not writable)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
