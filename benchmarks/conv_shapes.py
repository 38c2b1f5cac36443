"""
Where the ResNet bottom-up loses against the machine limit: replays every convolution of
RetinaNetPlugin's R50 bottom-up at the input shape it sees on the benchmark's 800x1216 image
(NHWC, F.conv2d), and prints time and GFLOP/s per weight shape, slowest first.

    python benchmarks/conv_shapes.py [--threads 2]

Run it alone on the machine. Try it also with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=10000000000
in the environment: large freed blocks then stay with the process instead of being page-faulted
in again on every call (see README, Speed).
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from adapters import OursAdapter  # noqa: E402
from inputs import inference_sample  # noqa: E402
from measure import time_calls  # noqa: E402


def median_time(fn, repeats=5):
    """Median wall time of `repeats` calls after one untimed call."""
    return statistics.median(time_calls(fn, repeats, 1, "cpu")[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = OursAdapter("cpu")
    batch = adapter.inference_batch(inference_sample())
    seen = []
    convs = [m for m in adapter.model.backbone.bottom_up.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda m, inputs, out: seen.append((m, tuple(inputs[0].shape)))) for m in convs]
    with torch.no_grad():
        adapter.infer(batch)
    for hook in hooks:
        hook.remove()

    rows, total_flop, total_time = {}, 0, 0.0
    with torch.no_grad():
        for conv, shape in seen:
            x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
            seconds = median_time(lambda: F.conv2d(x, conv.weight, None, conv.stride, conv.padding))
            out_h = (shape[2] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            out_w = (shape[3] + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
            flop = 2 * conv.weight[0].numel() * conv.weight.shape[0] * out_h * out_w
            row = rows.setdefault((tuple(conv.weight.shape), conv.stride[0], shape[2], shape[3]), [0, 0.0, 0])
            row[0] += flop
            row[1] += seconds
            row[2] += 1
            total_flop += flop
            total_time += seconds
    print(harness.machine_line(args.threads))
    print("weight shape, stride, input HxW | calls | time | GFLOP/s")
    for (weight, stride, h, w), (flop, seconds, calls) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        print(f"{weight}, {stride}, {h}x{w} | {calls} | {seconds * 1e3:.1f} ms | {flop / seconds / 1e9:.0f}")
    print(f"bottom-up convolutions: {total_flop / 1e9:.1f} GFLOP in {total_time:.3f} s = {total_flop / total_time / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
