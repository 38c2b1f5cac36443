"""
raster.py's report: one row per (size, dtype, path) from its repeats, the table, the check that
both paths give the same detections, the issue's targets and a warning for shared cores.
"""
from harness import stats
from raster_inputs import PATHS


def summarize(runs: list) -> dict:
    """One row from the repeats of one (size, dtype, path): median time, largest peak."""
    return {
        "windows": runs[0]["windows"], "detections": runs[0]["detections"],
        "seconds": stats(r["seconds"] for r in runs)["median"],
        "cpu_seconds": stats(r["cpu_seconds"] for r in runs)["median"],
        "read_seconds": stats(r["read_seconds"] for r in runs)["median"],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "growth_mib": max(r["peak_rss_mib"] - r["rss_before_mib"] for r in runs),
        "digests": sorted({r["digest"] for r in runs}), "counts": sorted({r["detections"] for r in runs}),
        "cpu_use": min(r["cpu_seconds"] / r["seconds"] for r in runs),
    }  # fmt: skip


def table(rows: dict, sizes, dtypes) -> str:
    lines = [
        "| size | dtype | path | windows | detections | seconds | of which raster reads | s/megapixel | peak RSS MiB | RSS growth MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for dtype in dtypes:
            for path in PATHS:
                r = rows.get((size, dtype, path))
                if r is None:
                    continue
                lines.append(
                    f"| {size}² | {dtype} | {path} | {r['windows']} | {r['detections']} | {r['seconds']:.1f} | "
                    f"{r['read_seconds']:.1f} | {r['seconds'] / (size * size / 1e6):.4f} | {r['peak_rss_mib']:.0f} | {r['growth_mib']:.0f} |"
                )
    return "\n".join(lines)


def checks(rows: dict, sizes, dtypes) -> list:
    lines = []
    for size in sizes:
        for dtype in dtypes:
            a, b = rows.get((size, dtype, "windowed")), rows.get((size, dtype, "in memory"))
            if a and b:
                same = a["counts"] == b["counts"] and len(a["counts"]) == 1
                identical = a["digests"] == b["digests"] and len(a["digests"]) == 1
                lines.append(
                    f"check {size}² {dtype}: detections windowed {a['counts']} / in memory {b['counts']}: "
                    f"{'same' if same else 'DIFFERENT'}; boxes and scores {'identical' if identical else 'DIFFER'}"
                )
    return lines


def targets(rows: dict, sizes, dtypes) -> list:
    lines = []
    first, last = min(sizes), max(sizes)
    for dtype in dtypes:
        a, b = rows.get((first, dtype, "windowed")), rows.get((last, dtype, "windowed"))
        if a and b and first != last:
            growth = 100 * (b["peak_rss_mib"] / a["peak_rss_mib"] - 1)
            lines.append(
                f"{dtype}: peak memory windowed {first}² -> {last}²: {a['peak_rss_mib']:.0f} MiB -> "
                f"{b['peak_rss_mib']:.0f} MiB ({growth:+.1f} %), target <= 10 %: {'met' if growth <= 10 else 'not met'}"
            )
        ratios, cpu_ratios = [], []
        for size in sizes:
            w, m = rows.get((size, dtype, "windowed")), rows.get((size, dtype, "in memory"))
            if w and m:
                ratios.append((size, w["seconds"] / m["seconds"]))
                cpu_ratios.append((size, w["cpu_seconds"] / m["cpu_seconds"]))
        if ratios:
            # The windowed path must cost at most 10 % more per megapixel; faster is fine (the
            # in-memory path pays for holding and slicing one huge array).
            met = all(r <= 1.10 for _, r in ratios)
            text = ", ".join(f"{s}² {r:.3f}" for s, r in ratios)
            cpu_text = ", ".join(f"{s}² {r:.3f}" for s, r in cpu_ratios)
            lines.append(
                f"{dtype}: time per megapixel windowed / in memory at each size: {text}, "
                f"target <= 1.10: {'met' if met else 'not met'} (CPU time: {cpu_text})"
            )
    return lines


def contention(rows, threads) -> list:
    """
    A warning when a run got much less CPU time than its threads could use: another process
    held a core, and torch's threads then wait for each other at every op (with 2 threads and
    one core busy elsewhere, a window took 16x as long as with 1 thread).
    """
    slow = sorted(f"{s}² {d} {p} ({r['cpu_use']:.2f})" for (s, d, p), r in rows.items() if r["cpu_use"] < 0.8 * threads)
    if not slow:
        return []
    return ["", f"WARNING: CPU time below 0.8 x {threads} x wall (cores shared with other work), times not trustworthy: " + ", ".join(slow)]


def report(rows, sizes, dtypes, threads) -> str:
    parts = [table(rows, sizes, dtypes), "", *checks(rows, sizes, dtypes), "", *targets(rows, sizes, dtypes)]
    return "\n".join(parts + contention(rows, threads))
