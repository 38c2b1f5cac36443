"""
The report: the correctness of ours against Detectron2 (detections as
sets with retina_plugin.compare, losses), medians and ratios, and the README-ready markdown
(table and notes).
"""
import torch

from harness import machine_name, stats
from inputs import INFER_SIZE
from models import MODELS
from tasks import MEASUREMENTS

TITLES = {
    "inference": "inference, 1 image 800x1216",
    "inference_bf16": "inference in bfloat16, 1 image 800x1216",
    "inference_int8": "inference in int8 (ours only), 1 image 800x1216",
    "postprocess": "postprocess only (head outputs -> detections)",
    "train_step": "training step, batch 2 x 640x853",
    "loss_backward": "labelling + losses + backward, batch 2",
}
# Ours vs Detectron2 on the inference image (retina_plugin.compare.compare_detections): the same
# criteria as tests/test_parity.py.
DETECTIONS_MIN_IOU = 0.999
DETECTIONS_SCORE_ATOL = 1e-4


def detection_tensors(detections):
    """(boxes (R, 4), scores (R,), classes (R,)) from an adapter's `detections` (lists)."""
    return (
        torch.tensor(detections["boxes"], dtype=torch.float32).reshape(-1, 4),
        torch.tensor(detections["scores"], dtype=torch.float32),
        torch.tensor(detections["classes"], dtype=torch.long),
    )


def compare_detections(ours, ref):
    """ours vs detectron2 detections as sets (class, IoU, score; near-tied scores may differ)."""
    from retina_plugin.compare import compare_detections

    result = compare_detections(
        detection_tensors(ours),
        detection_tensors(ref),
        min_iou=DETECTIONS_MIN_IOU,
        score_atol=DETECTIONS_SCORE_ATOL,
    )
    return {**result, "required_iou": DETECTIONS_MIN_IOU, "score_atol": DETECTIONS_SCORE_ATOL}


def compare_losses(ours, ref):
    """Relative difference |ours - ref| / |ref| per loss."""
    return {k: abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref}


def summarize(results, limit, info, args, wall_s):
    """The JSON report: machine info, raw results, medians, ratios, correctness."""
    summary = {"machine": info, "args": vars(args), "wall_s": wall_s, "machine_limit": limit, "results": results}
    ours_flops = results["ours"]["inference"]["network_gflop"]
    for model in MODELS:
        for measure in results[model]:
            r = results[model][measure]
            t = stats(r["times"])
            r["median_s"], r["min_s"] = t["median"], t["min"]
        inference = results[model]["inference"]
        inference["percent_of_limit"] = 100 * inference["network_gflop"] / inference["median_s"] / limit["gflop_per_s"]
    summary["flops_note"] = (
        "network_gflop = 2 x fvcore multiply-adds of backbone + head at network_input_shape; "
        f"ours = {ours_flops:.1f} GFLOP"
    )
    ours, ref = results["ours"], results["detectron2"]
    summary["correctness"] = {
        "detections": compare_detections(ours["inference"]["detections"], ref["inference"]["detections"]),
        "loss_rel_diff": compare_losses(ours["loss_backward"]["first_losses"], ref["loss_backward"]["first_losses"]),
        "train_step_loss_rel_diff": compare_losses(
            ours["train_step"]["first_losses"], ref["train_step"]["first_losses"]
        ),
    }
    return summary


def _row(title, values, fmt, with_ratios=True):
    """A table row: `values` per model as tuples (None: not measured), the first also gives the ratios."""
    ours = values[0][0]
    ratios = [f"{v[0] / ours:.2f}" if v and ours > 0 else "-" for v in values[1:]] if with_ratios else ["", ""]
    return "| " + " | ".join([title] + [fmt(v) if v else "-" for v in values] + ratios) + " |"


def _seconds(v):
    digits = 4 if v[0] < 0.1 else 3
    return f"{v[0]:.{digits}f} ({v[1]:.{digits}f})"


def result_table(results):
    def per_model(measure, *keys):
        return [tuple(results[m][measure][k] for k in keys) if measure in results[m] else None for m in MODELS]

    lines = [
        "| measurement | " + " | ".join(MODELS) + " | detectron2 / ours | torchvision / ours |",
        "|---|---|---|---|---|---|",
    ]
    for measure in MEASUREMENTS:
        lines.append(_row(f"{TITLES[measure]} (s)", per_model(measure, "median_s", "min_s"), _seconds))
    for measure in MEASUREMENTS:
        lines.append(_row(f"peak memory: {measure} (MiB)", per_model(measure, "peak_mib"), lambda v: f"{v[0]:.0f}"))
    lines.append(
        _row("network GFLOP (backbone + head)", per_model("inference", "network_gflop"), lambda v: f"{v[0]:.1f}")
    )
    lines.append(
        _row(
            "inference, % of machine limit",
            per_model("inference", "percent_of_limit"),
            lambda v: f"{v[0]:.1f}%",
            with_ratios=False,
        )
    )
    return lines


def correctness_line(correctness):
    det = correctness["detections"]
    count_ours, count_ref = det["count"]
    min_iou = "-" if det["min_iou"] is None else f"{det['min_iou']:.6f}"
    score_diff = "-" if det["max_score_diff"] is None else f"{det['max_score_diff']:.2e}"

    def rel(d):
        return ", ".join(f"{k} {v:.1e}" for k, v in d.items())

    return (
        f"- **Correctness, ours vs detectron2** ({'match' if det['match'] else 'MISMATCH'}): detections "
        f"as sets (same class, IoU >= {det['required_iou']}, |score diff| <= {det['score_atol']:.0e}, "
        f"near-tied scores may differ): {count_ours} vs {count_ref}, {det['matched']} matched, "
        f"{det['ties']} ties, {det['unmatched']} unmatched, min IoU {min_iou}, max |score diff| {score_diff}; "
        f"labelling+losses rel. diff: {rel(correctness['loss_rel_diff'])}; "
        f"first training step losses rel. diff: {rel(correctness['train_step_loss_rel_diff'])}."
    )


def result_notes(summary):
    results, info, limit = summary["results"], summary["machine"], summary["machine_limit"]
    load = summary["load_average_1min"]
    return [
        f"- Machine limit: {limit['gflop_per_s']:.0f} GFLOP/s (best of {limit['runs']} runs of one 3x3 conv "
        f"256->256 on 1x256x{INFER_SIZE[0] // 8}x{INFER_SIZE[1] // 8}, NCHW or NHWC). GFLOP = 2 x fvcore's "
        "multiply-adds; % of limit = GFLOP / median inference time / limit.",
        "- Network input: " + ", ".join(f"{m} {results[m]['inference']['network_input_shape']}" for m in MODELS) + ".",
        "- Scores above 0.05 per image (postprocess input): "
        + ", ".join(f"{m} {results[m]['postprocess']['candidates_per_image'][0]}" for m in MODELS)
        + ".",
        correctness_line(summary["correctness"]),
        "- bfloat16: ours in bfloat16 vs detectron2 in float32: "
        f"{results['detectron2']['inference']['median_s'] / results['ours']['inference_bf16']['median_s']:.2f}x "
        f"({len(results['ours']['inference_bf16']['detections']['scores'])} detections). Accuracy cost on the "
        "embedded val split: see benchmarks/README.md.",
        "- int8: ours in int8 vs detectron2 in float32: "
        f"{results['detectron2']['inference']['median_s'] / results['ours']['inference_int8']['median_s']:.2f}x, "
        f"vs ours in float32: {results['ours']['inference']['median_s'] / results['ours']['inference_int8']['median_s']:.2f}x; "
        f"{results['ours']['inference_int8']['vs_float32']['matched']} of float32's "
        f"{results['ours']['inference_int8']['vs_float32']['top']} best detections found again (same class, IoU >= 0.9; "
        "random weights are a hard case for quantization). Accuracy cost on the embedded val split: see benchmarks/README.md.",
        f"- Peak memory: {results['ours']['inference']['memory_method']}, over a warm-up and one "
        "measured call, in a separate process per cell.",
        f"- 1-minute load average at start {load['start']:.2f}, at end {load['end']:.2f} "
        f"({info['cpu_count']} CPUs; other processes competing for the cores slow every column).",
    ]


def markdown(summary):
    info = summary["machine"]
    device = info["device"] + (f" ({info['gpu']})" if "gpu" in info else "")
    lines = [
        f"# RetinaNet R50-FPN: ours vs detectron2 vs torchvision ({machine_name(info)})",
        "",
        f"{info['cpu_model']}, device {device}, {info['threads']} threads; torch {info['torch']}, "
        f"torchvision {info['torchvision']}, detectron2 {info['detectron2']}. Median of "
        f"{summary['args']['repeats']} runs (min in parentheses); the run took {summary['wall_s']:.0f} s.",
        "",
        *result_table(summary["results"]),
        "",
        *result_notes(summary),
    ]
    return "\n".join(lines) + "\n"
