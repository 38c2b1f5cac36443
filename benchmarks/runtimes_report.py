"""
runtimes.py's report: the agreement of every row with its reference (head outputs through
ours' float postprocess), the table of times and ratios, the targets and the notes.
"""
from pathlib import Path

import numpy as np

from harness import library_versions, stats
from int8_ap_rows import table_lines
from inputs import INFER_SIZE
from runners import CALLS, FLOAT32_OF, ROWS, WARMUP

# The targets: ours / the fastest runtime of the same precision.
TARGETS = {"float32": 1.2, "int8": 1.2}
MAX_INT8_AP_COST = 0.3  # AP below float32 on the embedded val split


def postprocessed(model, arrays):
    """Detections (boxes, scores, classes) from a row's head outputs, by ours' float postprocess."""
    import torch

    from retina_plugin.modeling.anchor_generator import anchor_tensors

    tensors = [torch.from_numpy(a) for a in arrays]
    levels = len(tensors) // 2
    logits, deltas = tensors[:levels], tensors[levels:]
    strides = [model.backbone.output_shape()[f].stride for f in model.head_in_features]
    padded = [-(-s // 32) * 32 for s in INFER_SIZE]
    features = [torch.empty(1, 1, -(-padded[0] // s), -(-padded[1] // s)) for s in strides]
    (instances,) = model.postprocess(anchor_tensors(model.anchor_generator, features), logits, deltas, [INFER_SIZE], [INFER_SIZE])
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def agreement(model, workdir, rows):
    """Per row: max |head output diff| and detections vs its reference (int8: its float32; else ours)."""
    import torch

    from retina_plugin.compare import compare_detections
    from tasks import compare_int8_detections

    def load(row, part):
        path = Path(workdir) / f"{row}-{part}.npz"
        return None if not path.exists() else [v for _, v in sorted(np.load(path).items(), key=lambda kv: int(kv[0].split("_")[1]))]

    def as_lists(d):
        return {"boxes": d[0].tolist(), "scores": d[1].tolist(), "classes": d[2].tolist()}

    out = {}
    for row in rows:
        ref_row = FLOAT32_OF.get(row, "ours")
        if row == ref_row:
            continue
        net, ref_net = load(row, "network"), load(ref_row, "network")
        dets, ref_dets = postprocessed(model, net), postprocessed(model, ref_net)
        entry = {"vs": ref_row, "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(net, ref_net)))}
        if row in FLOAT32_OF:
            entry["top"] = compare_int8_detections(as_lists(dets), as_lists(ref_dets))
        else:
            c = compare_detections(dets, ref_dets, min_iou=0.99, score_atol=1e-4)
            entry["compare"] = {k: c[k] for k in ("count", "matched", "ties", "unmatched", "match")}
            full = load(row, "detector")
            if full is not None and row != "ours_compiled":
                c = compare_detections(tuple(torch.from_numpy(x) for x in full), ref_dets, min_iou=0.99, score_atol=1e-4)
                entry["detector_compare"] = {k: c[k] for k in ("count", "matched", "ties", "unmatched", "match")}
        out[row] = entry
    return out


def _stats(summary, row, part):
    values = [r[part] for r in summary["rounds"][row] if part in r]
    if not values:
        return None
    t = stats(values)
    return t["median"], t["min"]


def markdown(summary):
    lines = [
        "| runtime | precision | network (s) | vs ours float32 | detector (s) | vs ours float32 | agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {p: _stats(summary, "ours", p)[0] for p in ("network", "detector")}
    for row, (runtime, precision) in ROWS.items():
        cells = [runtime, precision]
        for part in ("network", "detector"):
            s = _stats(summary, row, part)
            cells += ["-", "-"] if s is None else [f"{s[0]:.3f} ({s[1]:.3f})", f"{base[part] / s[0]:.2f}"]
        cells.append(_agreement_cell(summary["agreement"].get(row)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += target_lines(summary)
    ap = summary.get("int8_ap")
    if ap is not None:
        lines += ["", f"**Accuracy of the int8 paths** (`benchmarks/int8_ap.py`, {ap['seconds']:.0f} s): COCO AP on the embedded "
                  "val split of `make run`'s model, every int8 path calibrated on the same 32 shapes_train images:", ""]  # fmt: skip
        lines += table_lines(ap["rows"])
        cost = max(r["AP_minus_float32"] for r in ap["rows"] if r["path"] == "ours" and r["precision"] == "int8")
        lines += ["", f"- target: ours int8 at <= {MAX_INT8_AP_COST} AP below float32: {cost:+.2f}: **{'met' if cost >= -MAX_INT8_AP_COST else 'not met'}**"]
    compile_s = [r["compile_s"] for r in summary["rounds"]["ours_compiled"]]
    info = summary["machine"]
    lines += [
        "",
        f"- **Machine:** \"{info['cpu_model']}\", {summary['threads']} threads; torch {info['torch']}, "
        f"{library_versions()}.",
        f"- **Times:** median (min) over {summary['repeats']} worker runs, each the median of {CALLS} calls after "
        f"{WARMUP} untimed one{'s' if WARMUP > 1 else ''}. Ratios are ours float32 / the row: above 1, the row is faster than ours float32.",
        f"- **torch.compile** (inductor, freezing) of backbone and head: the first call, compilation included, "
        f"took {compile_s[0]:.1f} s in the first worker run and {stats(compile_s)['median']:.1f} s (median) over all; "
        "inductor's on-disk cache (`/tmp/torchinductor_<user>`) serves later processes.",
        f"- **The run** took {summary['seconds']:.0f} s, at a 1-minute load average of "
        f"{summary['load_average_1min']['start']:.2f}-{summary['load_average_1min']['end']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def _agreement_cell(entry):
    if entry is None:
        return "reference"
    if "top" in entry:
        return (f"{entry['top']['matched']} of {entry['top']['top']} best of {entry['vs']} found (same class, IoU >= 0.9); "
                f"max head diff {entry['max_abs_diff']:.2g}")  # fmt: skip
    c = entry["compare"]
    text = f"vs ours: {c['matched']}/{c['count'][1]} matched, {c['unmatched']} unmatched; max head diff {entry['max_abs_diff']:.2g}"
    if "detector_compare" in entry:
        d = entry["detector_compare"]
        text += f"; own detector {d['matched']}/{d['count'][1]} matched ({'match' if d['match'] else 'MISMATCH'})"
    return text


def target_lines(summary):
    lines = []
    for precision, factor in TARGETS.items():
        ours = "ours" if precision == "float32" else "ours_int8"
        for part in ("network", "detector"):
            peers = [row for row, (rt, p) in ROWS.items() if p == precision and not row.startswith("ours") and _stats(summary, row, part)]
            if not peers or not _stats(summary, ours, part):
                continue
            fastest = min(peers, key=lambda row: _stats(summary, row, part)[0])
            ratio = _stats(summary, fastest, part)[0] / _stats(summary, ours, part)[0]
            best = min((row for row, (_, p) in ROWS.items() if p == precision and row.startswith("ours")),
                       key=lambda row: _stats(summary, row, part)[0] if _stats(summary, row, part) else float("inf"))  # fmt: skip
            best_ratio = _stats(summary, fastest, part)[0] / _stats(summary, best, part)[0]
            extra = "" if best == ours else f" (with {ROWS[best][0]}: {best_ratio:.2f}x, {'met' if best_ratio >= factor else 'not met'})"
            lines.append(
                f"- target: ours {precision} >= {factor}x the fastest {precision} runtime ({part}): "
                f"{ROWS[fastest][0]}, ours {ratio:.2f}x: **{'met' if ratio >= factor else 'not met'}**{extra}"
            )
    return lines
