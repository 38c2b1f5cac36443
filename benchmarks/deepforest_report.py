"""
deepforest.py's table, checks and targets, from its runs: {(raster, runtime): run}, each run
with seconds, megapixels, peak_rss_mib, rss_before_mib, boxes (pixel XYXY) and scores.
"""
import numpy as np
import torch

from retina_plugin.compare import compare_detections

from deepforest_match import greedy_match

RASTERS = ("generated", "OSBS_029")
RUNTIMES = ("deepforest", "float32", "int8")
RECALL_IOU = 0.4
FLOAT32_TARGET, INT8_TARGET, MAX_RECALL_LOST = 1.5, 4.0, 0.01


def _arrays(run):
    return np.asarray(run["boxes"], np.float64).reshape(-1, 4), np.asarray(run["scores"], np.float64)


def same_detections(ours, theirs) -> dict:
    """retina_plugin.compare on pixel boxes: IoU >= 0.999, scores within 1e-4, one class."""
    (boxes, scores), (ref_boxes, ref_scores) = _arrays(ours), _arrays(theirs)
    zeros = lambda n: torch.zeros(n, dtype=torch.long)  # noqa: E731
    return compare_detections(
        (torch.from_numpy(boxes), torch.from_numpy(scores), zeros(len(boxes))),
        (torch.from_numpy(ref_boxes), torch.from_numpy(ref_scores), zeros(len(ref_boxes))), min_iou=0.999, score_atol=1e-4,
    )  # fmt: skip


def recall(detections, reference_boxes) -> float:
    """Share of `reference_boxes` matched at IoU >= RECALL_IOU by `detections` (COCOeval's greedy matching, deepforest_match.py)."""
    boxes, scores = _arrays(detections)
    reference = np.asarray(reference_boxes, np.float64).reshape(-1, 4)
    _, ref_matched = greedy_match(boxes, scores, reference, RECALL_IOU)
    return float(ref_matched.mean()) if len(reference) else 1.0


def summarize(results: dict, objects) -> dict:
    rows = {}
    for (raster, runtime), run in results.items():
        base = results[(raster, "deepforest")]
        row = {
            "detections": len(run["scores"]), "seconds": run["seconds"], "s_per_megapixel": run["seconds"] / run["megapixels"],
            "peak_rss_mib": run["peak_rss_mib"], "rss_growth_mib": run["peak_rss_mib"] - run["rss_before_mib"],
            "speedup": base["seconds"] / run["seconds"], "windows": run.get("windows"), "threads": run.get("threads"),
        }  # fmt: skip
        if runtime == "float32":
            row["vs_deepforest"] = same_detections(run, base)
        if runtime == "int8":
            row["recall_of_float32"] = recall(run, results[(raster, "float32")]["boxes"])
        if raster == "generated":
            row["recall_of_objects"] = recall(run, objects)
        rows[f"{raster}/{runtime}"] = row
    return rows


def table(rows: dict) -> str:
    lines = [
        "| raster | runtime | detections | s/megapixel | peak RSS MiB (growth) | speed vs DeepForest | same as DeepForest (float32) / recall of float32 at IoU 0.4 (int8) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        raster, runtime = key.split("/")
        check = ""
        if "vs_deepforest" in row:
            c = row["vs_deepforest"]
            iou, diff = c["min_iou"], c["max_score_diff"]
            check = (
                f"{'yes' if c['match'] else 'NO'}: {c['matched']} of {c['count'][1]} matched, {c['ties']} ties, {c['unmatched']} unmatched; "
                f"min IoU {iou if iou is None else round(iou, 4)}, max score diff {diff if diff is None else f'{diff:.1e}'}"
            )
        elif "recall_of_float32" in row:
            check = f"{row['recall_of_float32']:.4f}"
        lines.append(
            f"| {raster} | {runtime} | {row['detections']} | {row['s_per_megapixel']:.2f} | {row['peak_rss_mib']:.0f} "
            f"(+{row['rss_growth_mib']:.0f}) | {row['speedup']:.2f}x | {check} |"
        )
    return "\n".join(lines) + "\n"


def targets(rows: dict) -> list:
    out = []
    for raster in RASTERS:
        f32, i8 = rows.get(f"{raster}/float32"), rows.get(f"{raster}/int8")
        if f32 is None or i8 is None:
            continue
        if f32["detections"] == 0:  # 0 of 0 matched would read as "met"
            out.append(f"- {raster}: float32 made no detections: the targets are not judged on it")
            continue
        c = f32["vs_deepforest"]
        same = c["match"]  # retina_plugin.compare: every detection matched, or one of two near-equal scores kept (a tie)
        lost, measure = recall_lost(f32, i8)
        ok32 = f32["speedup"] >= FLOAT32_TARGET and same
        ok8 = i8["speedup"] >= INT8_TARGET and lost <= MAX_RECALL_LOST
        out.append(f"- {raster}: float32 {f32['speedup']:.2f}x DeepForest's speed, same detections {same}: target >= {FLOAT32_TARGET}x {'met' if ok32 else 'NOT met'}")
        out.append(
            f"- {raster}: int8 {i8['speedup']:.2f}x, {measure} {100 * lost:.2f} % (int8 finds {100 * i8['recall_of_float32']:.2f} % of "
            f"float32's detections): target >= {INT8_TARGET}x at <= {100 * MAX_RECALL_LOST:.0f} % {'met' if ok8 else 'NOT met'}"
        )
    return out


def recall_lost(f32: dict, i8: dict) -> tuple:
    """(share lost, what it is): the issue's measure, the recall of the raster's objects at IoU 0.4, int8's against
    float32's, where the objects are known (the generated raster); else, the stricter stand-in, the share of float32's
    detections int8 does not find (a near-tie that rounding reorders counts there even when both find the object)."""
    if "recall_of_objects" in f32 and "recall_of_objects" in i8:
        return f32["recall_of_objects"] - i8["recall_of_objects"], "recall of the objects lost against float32"
    return 1.0 - i8["recall_of_float32"], "recall of float32's detections lost (objects unknown)"


def report(results: dict, objects, threads: int, model: str, trained: bool):
    """(rows, the markdown table with the targets and notes); `model` names the weights, `trained` False for random ones."""
    rows = summarize(results, objects)
    notes = [f"{threads} threads, one run each, every run in its own process. Model: {model}."]
    generated = {k: v for k, v in rows.items() if k.startswith("generated/") and "recall_of_objects" in v}
    if generated:
        notes.append(
            f"Recall of the generated raster's {len(objects)} objects at IoU {RECALL_IOU}"
            + ("" if trained else " (random weights: not a measure of the model)") + ": "
            + ", ".join(f"{k.split('/')[1]} {v['recall_of_objects']:.4f}" for k, v in generated.items())
        )
    text = "## DeepForest predict_tile vs predict_raster\n\n" + table(rows) + "\n" + "\n".join(targets(rows) + [""] + notes) + "\n"
    return rows, text
