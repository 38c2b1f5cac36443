"""
MODEL.RETINA_PLUGIN.WINOGRAD "auto", True and False in one process, on the runtimes benchmark's
R50-FPN (bench.py's weights) and 800x1216 image: the model made ready once, its mode switched
between calls (`use_winograd`), the modes taking turns, so that the spread between processes
and rounds falls on all of them alike. Prints the median and min of the network part (image ->
head outputs) per mode.

    python benchmarks/winograd_modes.py [--pairs 8] [--threads 2] [--modes auto True]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import harness
from models import build_ours
from runners import WEIGHTS_FILE, Ours, timed_image
from retina_plugin.modeling.winograd import use_winograd

MODES = {"auto": "auto", "True": True, "False": False}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="rounds in which every mode is timed once")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["auto", "True"], choices=list(MODES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        torch.save({"model": build_ours("cpu").state_dict()}, Path(workdir) / WEIGHTS_FILE)
        ours = Ours("ours", workdir, args.threads)
    image = timed_image()
    times = {mode: [] for mode in args.modes}
    for mode in args.modes:  # the first call of a mode measures ("auto") or warms up
        use_winograd(ours.model, MODES[mode])
        ours.network(image)
    for _ in range(args.pairs):
        for mode in args.modes:
            use_winograd(ours.model, MODES[mode])
            start = time.perf_counter()
            ours.network(image)
            times[mode].append(time.perf_counter() - start)
    print(harness.machine_line(args.threads), f"load average {harness.load_average()}")
    for mode, t in times.items():
        print(f"WINOGRAD {mode}: network median {statistics.median(t):.3f} s, min {min(t):.3f} s over {len(t)} calls")


if __name__ == "__main__":
    main()
