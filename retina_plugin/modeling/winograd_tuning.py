"""
Winograd or the direct convolution, and Winograd's chunk size, per convolution shape, measured
on the machine that runs it (MODEL.RETINA_PLUGIN.WINOGRAD "auto"), as cuDNN's benchmark mode
does on GPUs.

The first inference call of each shape times every candidate on the call's own input and
filters (one untimed call each, then the best of REPEATS calls, taking turns) and keeps the
fastest. It measures
then, not when the model is made ready, because the shapes follow the input images, which are
unknown before. The choices are kept in a JSON file under the user's cache folder
(`$XDG_CACHE_HOME/retina_plugin/` or `~/.cache/retina_plugin/`), one file per machine key:
the CPU model and its vector / matrix extensions, the torch version and the thread count. A
file whose key is another machine's, or that does not read as such a table, is ignored with
one log line and measured again.
"""
import functools
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

# Tiles per Winograd matrix product tried against the direct convolution ("direct", None).
CHUNK_CANDIDATES = (64, 128, 256, 512)
REPEATS = 3
# A measurement made while the 1-minute load average exceeds this many runnable processes per
# core is used by the process that made it but not written to the cache: other processes on
# the same cores make every candidate slower, the direct convolution's oneDNN threads most of
# all (at load 9.6 on 2 cores: direct 154 ms, Winograd 499 ms on a shape measured at 12 and
# 15 ms quiet), so later processes measure again instead of inheriting a wrong choice.
MAX_LOAD_PER_CORE = 1.0
# /proc/cpuinfo flags that change which convolution kernels oneDNN and MKL run.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
ALGORITHMS = ("direct", "winograd")
Choice = Tuple[str, Optional[int]]  # ("direct", None) or ("winograd", tiles per chunk)

measurements = 0  # shapes measured by this process (the tests count them)
_tables: Dict[Path, Dict[str, dict]] = {}  # cache file -> its shape table, as read or measured
# (threads, cache folder setting, shape) -> choice: a convolution's lookup costs one dict access,
# not the machine key's /proc/cpuinfo read and hash (~0.15 ms, ~100 convolutions an image).
_choices: Dict[Tuple[int, Optional[str], str], "Choice"] = {}


@functools.lru_cache(maxsize=1)
def cpu_model() -> Tuple[str, Tuple[str, ...]]:
    """(the CPU's model name, the KERNEL_FLAGS it has), from /proc/cpuinfo where there is one."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine(), ()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), tuple(f for f in KERNEL_FLAGS if f in flags)


def machine_key() -> dict:
    """What a measurement holds for: the CPU, its kernel flags, torch's version, the thread count."""
    model, flags = cpu_model()
    return {"cpu": model, "flags": list(flags), "torch": torch.__version__, "threads": torch.get_num_threads()}


def cache_path(key: dict) -> Path:
    """The cache file of the machine `key`: $XDG_CACHE_HOME (or ~/.cache)/retina_plugin/winograd-<hash>.json."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "retina_plugin"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"winograd-{digest}.json"


def choose(shape: str, candidates: Callable[[Choice], Callable[[], object]], chunks=CHUNK_CANDIDATES) -> Choice:
    """
    The fastest way to run the convolution `shape` (a string naming it fully) on this machine:
    from the cache, or measured now with `candidates(choice)`, a function that runs it that way,
    for the direct convolution and Winograd with each of `chunks` (those of CHUNK_CANDIDATES
    that make different chunks at this shape).
    """
    memo = (torch.get_num_threads(), os.environ.get("XDG_CACHE_HOME"), shape)
    if memo in _choices:
        return _choices[memo]
    key = machine_key()
    path = cache_path(key)
    table = _tables.get(path)
    if table is None:
        table = _tables[path] = read_table(path, key)
    entry = table.get(shape)
    if entry is None:
        entry = measure(candidates, chunks)
        cores = os.cpu_count() or 1
        if quiet(entry, cores):
            table[shape] = entry
            write_table(path, key, table)
        else:
            logger.warning(
                "Winograd autotune: %s measured at load average %s on %d cores: used by this process, not "
                "written to %s (a later, quieter process measures it again)", shape, entry["load_average_1min"], cores, path,
            )
    _choices[memo] = entry["algorithm"], entry["tiles_per_chunk"]
    return _choices[memo]


def measure(candidates: Callable[[Choice], Callable[[], object]], chunks=CHUNK_CANDIDATES) -> dict:
    """
    The fastest choice, with every choice's best time (ms): each called once untimed, then
    REPEATS rounds that call each in turn, so that load from other processes falls on all of
    them alike. After the first round, a choice over 3x the best time so far is dropped: it
    cannot win.
    """
    global measurements
    measurements += 1
    runs = {choice: candidates(choice) for choice in [("direct", None)] + [("winograd", c) for c in chunks]}
    for run in runs.values():
        run()
    times = dict.fromkeys(runs, float("inf"))
    active = list(runs)
    for _ in range(REPEATS):
        for choice in active:
            start = time.perf_counter()
            runs[choice]()
            times[choice] = min(times[choice], time.perf_counter() - start)
        best = min(times.values())
        active = [choice for choice in active if times[choice] <= 3 * best]
    algorithm, chunk = min(times, key=times.get)
    ms = {f"{a}/{c}" if c else a: round(t * 1000, 3) for (a, c), t in times.items()}
    # The load average says how far other processes may have skewed the times.
    return {"algorithm": algorithm, "tiles_per_chunk": chunk, "ms": ms, "load_average_1min": round(os.getloadavg()[0], 2)}


def read_table(path: Path, key: dict) -> Dict[str, dict]:
    """The shape table in `path` if it is this machine's and well formed, else {} (one log line why)."""
    if not path.exists():
        return {}
    try:
        content = json.loads(path.read_text())
        if content.get("machine") != key:
            logger.warning("Winograd autotune: ignoring %s, measured on another machine (%s)", path, content.get("machine"))
            return {}
        shapes = content["shapes"]
        if not all(valid_entry(entry) for entry in shapes.values()):
            raise ValueError("an entry is not {algorithm, tiles_per_chunk}")
        # Entries measured on a busy machine, written before MAX_LOAD_PER_CORE guarded the writes
        # (their choices are wrong: direct for every large shape), are measured again.
        cores = os.cpu_count() or 1
        busy = sorted(shape for shape, entry in shapes.items() if not quiet(entry, cores))
        if busy:
            logger.warning(
                "Winograd autotune: %d entries of %s were measured above load %s per core (%s, ...); measuring them again",
                len(busy), path, MAX_LOAD_PER_CORE, busy[0],
            )
        return {shape: entry for shape, entry in shapes.items() if shape not in busy}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        logger.warning("Winograd autotune: ignoring the unreadable cache %s (%s); measuring again", path, e)
        return {}


def quiet(entry: dict, cores: int) -> bool:
    """Whether `entry` was measured at most MAX_LOAD_PER_CORE runnable processes per core (an entry without its load counts as quiet)."""
    return entry.get("load_average_1min", 0.0) <= MAX_LOAD_PER_CORE * cores


def valid_entry(entry) -> bool:
    """An entry names an algorithm and, for Winograd, one of CHUNK_CANDIDATES."""
    if not isinstance(entry, dict) or entry.get("algorithm") not in ALGORITHMS:
        return False
    chunk = entry.get("tiles_per_chunk")
    return chunk is None if entry["algorithm"] == "direct" else chunk in CHUNK_CANDIDATES


def write_table(path: Path, key: dict, table: Dict[str, dict]) -> None:
    """Write the table atomically (a temporary file renamed over it); a folder we cannot write is logged, not raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump({"machine": key, "shapes": table}, f, indent=1, sort_keys=True)
        os.replace(f.name, path)
    except OSError as e:
        logger.warning("Winograd autotune: could not write %s (%s); the choices hold for this process only", path, e)


def forget() -> None:
    """Drop the tables read by this process (the next call reads the cache files again)."""
    _tables.clear()
    _choices.clear()
