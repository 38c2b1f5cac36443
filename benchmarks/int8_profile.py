"""
Where the int8 network's time goes: ours against OpenVINO's int8 (runtimes.py's network: the
same weights, 800x1216 image and calibration images), per part of the R50-FPN, one call each
after two untimed ones, each runtime in its own worker process.

    python benchmarks/int8_profile.py [--threads 2] [--workdir DIR]

Ours: wall time of the call, and per part the time inside its Int8Conv2d modules (forward hooks;
a convolution's input quantization included). OpenVINO: its own per-node counters
(`PERF_COUNT`, `get_profiling_info`), summed per part by node name. "outside the convolutions"
is the rest of ours' wall time, and OpenVINO's nodes of no part (transposes, reorders).
Needs the bench extra (openvino, nncf). `--workdir` keeps the exported and quantized files
(runtime_export.prepare, as runtimes.py; about 2 minutes to make) for the next run.
"""
import argparse
import collections
import tempfile
import time
from pathlib import Path

import harness
from runners import WEIGHTS_FILE, Ours, openvino_config, timed_image
from runtime_export import prepare

PARTS = ("stem", "res2", "res3", "res4", "res5", "fpn_lateral", "fpn_output", "top_block",
         "cls_subnet", "bbox_subnet", "cls_score", "bbox_pred")  # fmt: skip
OUTSIDE = "outside the convolutions"


def part_of(name: str) -> str:
    """The part of a module name (ours) or node name (OpenVINO's graph of the ONNX export)."""
    return next((p for p in PARTS if p in name), OUTSIDE)


def profile_ours(workdir, threads):
    from retina_plugin.inference.int8 import Int8Conv2d

    runner = Ours("ours_int8", workdir, threads)
    image = timed_image()
    for _ in range(2):
        runner.network(image)
    names = {m: n for n, m in runner.model.named_modules()}
    spent, starts = collections.Counter(), {}
    for m in names:
        if isinstance(m, Int8Conv2d):
            m.register_forward_pre_hook(lambda m, args: starts.__setitem__(m, time.perf_counter()))
            m.register_forward_hook(lambda m, args, out: spent.update({part_of(names[m]): time.perf_counter() - starts[m]}))
    start = time.perf_counter()
    runner.network(image)
    wall = time.perf_counter() - start
    spent[OUTSIDE] = wall - sum(spent.values())
    return {"wall": wall, "parts": dict(spent)}


def profile_openvino(workdir, threads):
    import openvino as ov

    config = {**openvino_config(threads), "PERF_COUNT": True}
    compiled = ov.Core().compile_model(str(Path(workdir) / "network_int8.xml"), "CPU", config)
    request = compiled.create_infer_request()
    image = timed_image()
    for _ in range(2):
        request.infer({0: image})
    start = time.perf_counter()
    request.infer({0: image})
    wall = time.perf_counter() - start
    spent = collections.Counter()
    for node in request.get_profiling_info():
        spent[part_of(node.node_name)] += node.real_time.total_seconds()
    return {"wall": wall, "parts": dict(spent)}


WORKERS = {"ours": profile_ours, "openvino": profile_openvino}


def run_worker(args):
    return WORKERS[args.worker](args.workdir, args.threads)


def run_driver(args):
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "network_int8.xml").exists() or not (workdir / WEIGHTS_FILE).exists():
            prepare(workdir, lambda s: print(s, flush=True))
        worker_args = ["--workdir", workdir, "--threads", args.threads]
        results = {w: harness.spawn_worker(__file__, w, worker_args, workdir / f"profile_{w}.json") for w in WORKERS}
    ours, openvino = results["ours"], results["openvino"]
    print(harness.machine_line(args.threads))
    print(f"{args.threads} threads; one int8 network call each (ms)")
    print("| part | ours | OpenVINO |\n|---|---|---|")
    for part in (*PARTS, OUTSIDE):
        print(f"| {part} | {ours['parts'].get(part, 0.0) * 1e3:.1f} | {openvino['parts'].get(part, 0.0) * 1e3:.1f} |")
    print(f"| wall time of the call | {ours['wall'] * 1e3:.1f} | {openvino['wall'] * 1e3:.1f} |")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", help="keep the exported and quantized files here (made when missing)")
    harness.add_worker_arguments(parser, list(WORKERS))
    return parser.parse_args(argv)


if __name__ == "__main__":
    harness.main(parse_args(), run_worker, run_driver)
