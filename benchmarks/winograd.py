"""
Winograd F(4x4, 3x3) (retina_plugin/modeling/winograd.py) against oneDNN's direct convolution,
per 3x3 stride-1 convolution shape of the R50-FPN on the benchmark's 800x1216 image: where
MODEL.RETINA_PLUGIN.WINOGRAD pays and where its rules (`applies`, `pays_per_call`)
leave the direct convolution.

    python benchmarks/winograd.py [--threads 2] [--repeats 5]

Per shape, in turns, the median of `--repeats` calls after one untimed call: direct
(F.conv2d, NHWC, then ReLU), Winograd with the filters transformed beforehand (the head:
once per pass for all levels) and the filter transform alone (paid per call by the ResNet's
and FPN's convolutions, whose folded weights are made per call). Run it alone on the machine.
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from inputs import INFER_SIZE  # noqa: E402
from measure import time_calls  # noqa: E402

from retina_plugin.modeling import winograd  # noqa: E402


def shapes():
    """
    (where, calls per image, C, K, H, W, filters transformed per call) of the R50-FPN's 3x3
    stride-1 convolutions (ResNet stages: the blocks' conv2 after the first block's stride).
    """
    h, w = INFER_SIZE
    levels = {f"P{i}": (-(-h // 2**i), -(-w // 2**i)) for i in range(3, 8)}
    rows = [("res2", 3, 64, 64, h // 4, w // 4, True), ("res3", 4, 128, 128, h // 8, w // 8, True),
            ("res4", 6, 256, 256, h // 16, w // 16, True), ("res5", 3, 512, 512, h // 32, w // 32, True)]  # fmt: skip
    rows += [(f"FPN output {p}", 1, 256, 256, *levels[p], True) for p in ("P3", "P4", "P5")]
    for p, (lh, lw) in levels.items():
        rows += [(f"head subnets {p}", 8, 256, 256, lh, lw, False), (f"head cls_score {p}", 1, 256, 720, lh, lw, False),
                 (f"head bbox_pred {p}", 1, 256, 36, lh, lw, False)]  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def median(fn):
        return statistics.median(time_calls(fn, args.repeats, 1, "cpu")[0]) * 1e3

    print(harness.machine_line(args.threads))
    print(f"{args.threads} threads; ms per call (median of {args.repeats})")
    print("| convolution | calls | C -> K | H x W | direct + ReLU | Winograd | filter transform | direct / (Winograd + transform if per call) | used |")
    print("|---|---|---|---|---|---|---|---|---|")
    total_direct = total_used = 0.0
    with torch.no_grad():
        for where, calls, c, k, h, w, per_call in shapes():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, c, h, w, generator=g).relu_().contiguous(memory_format=torch.channels_last)
            weight = torch.randn(k, c, 3, 3, generator=g) / (9 * c) ** 0.5
            bias = torch.randn(k, generator=g)
            filters = winograd.transform_filter(weight)
            direct = median(lambda: F.conv2d(x, weight, bias, 1, 1).relu_())
            fast = median(lambda: winograd.winograd_conv2d(x, filters, bias, relu=True))
            transform = median(lambda: winograd.transform_filter(weight))
            cost = fast + (transform if per_call else 0.0)
            geometry = ((1, 1), (1, 1), (1, 1), 1)
            used = winograd.applies(x, weight, *geometry) and (not per_call or winograd.pays_per_call(x, weight))
            total_direct += calls * direct
            total_used += calls * (cost if used else direct)
            print(f"| {where} | {calls} | {c} -> {k} | {h} x {w} | {direct:.2f} | {fast:.2f} | {transform:.2f} | {direct / cost:.2f} | {'yes' if used else 'no'} |", flush=True)
    print(f"\nall these convolutions, times their calls per image: {total_direct:.0f} ms direct, {total_used:.0f} ms with the rules "
          f"({total_direct / total_used:.2f}x; the head's filter transforms, once per pass, not included)")


if __name__ == "__main__":
    main()
