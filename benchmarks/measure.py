"""
How the benchmark measures: wall time (`time_calls`, `run_timing`: models in turns), peak
memory growth (`PeakMemory`, `run_memory`), FLOPs of backbone + head (`network_gflop`, fvcore)
and the machine limit (`machine_limit`: the best throughput of one large conv).
"""
import contextlib
import gc
import time

import torch

from harness import proc_status_mib, reset_peak_rss
from inputs import INFER_SIZE, SEED


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn, repeats, warmup, device):
    """(list of `repeats` wall times in s after `warmup` untimed calls, output of the first call)."""
    first = None
    for i in range(warmup):
        out = fn()
        if i == 0:
            first = out
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, first


class PeakMemory:
    """
    Peak memory growth inside the `with` block, in MiB. CUDA: max_memory_allocated over
    memory_allocated at entry. CPU (Linux): the process's peak RSS (VmHWM), reset at entry via
    /proc/self/clear_refs, over its RSS at entry.
    """

    def __init__(self, device):
        self.device = device
        self.mib = None
        self.method = None

    def __enter__(self):
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated - memory_allocated at start"
        else:
            try:
                reset_peak_rss()
                self.base = proc_status_mib("VmRSS") * 2**20
                self.method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS at start"
            except OSError:
                self.base = proc_status_mib("VmHWM") * 2**20
                self.method = "VmHWM growth (HWM not resettable: a lower bound)"
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = proc_status_mib("VmHWM") * 2**20
        self.mib = (peak - self.base) / 2**20
        return False


def network_gflop(adapter, image_tensor):
    """fvcore's count of multiply-adds of backbone + head, times 2, in GFLOP."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(adapter.network(), (image_tensor,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return 2 * analysis.total() / 1e9


def run_timing(tasks, warmup, args):
    """
    `warmup` untimed calls of every model (tasks.Task per model), then `args.repeats` rounds of
    one timed call per model, the models' order rotating each round, so that load from other
    processes is spread over all. The first call's output of each model goes to its `report`.
    """
    models = list(tasks)
    first, times = {}, {m: [] for m in models}
    with contextlib.ExitStack() as stack:
        for m in models:
            stack.enter_context(tasks[m].context())
        for m in models:
            first[m] = time_calls(tasks[m].step, 0, warmup, args.device)[1]
        for r in range(args.repeats):
            for m in models[r % len(models):] + models[: r % len(models)]:
                times[m] += time_calls(tasks[m].step, 1, 0, args.device)[0]
    return {m: {"times": times[m], **tasks[m].report(first[m])} for m in models}


def run_memory(task, args):
    """Peak memory growth over two calls (the first one allocates lazily-built state, e.g. optimizer momenta)."""
    with task.context(), PeakMemory(args.device) as memory:
        time_calls(task.step, 1, 1, args.device)
    return {"peak_mib": memory.mib, "memory_method": memory.method}


def machine_limit(device, runs=5):
    """
    Best throughput of one 3x3 conv 256->256 on a P3-sized map (1x256x100x152), in GFLOP/s,
    over `runs` calls in each memory layout (NCHW and NHWC: the faster one is the limit).
    """
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(1, 256, INFER_SIZE[0] // 8, INFER_SIZE[1] // 8, generator=g).to(device)
    gflop = 2 * 256 * 256 * 9 * x.shape[-2] * x.shape[-1] / 1e9
    times = {}
    for layout, memory_format in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device, memory_format=memory_format).eval()
        x_layout = x.contiguous(memory_format=memory_format)

        def step():
            with torch.no_grad():
                return conv(x_layout)

        times[layout] = time_calls(step, runs, 2, device)[0]
    best = min(min(t) for t in times.values())
    return {"gflop_per_s": gflop / best, "conv_gflop": gflop, "runs": runs, "times": times}
