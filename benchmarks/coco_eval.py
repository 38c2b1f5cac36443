"""
COCO box evaluation at scale: pycocotools' COCOeval against faster-coco-eval's, as
`FastCOCOEvaluator` runs them (`retina_plugin.evaluation.evaluate_coco_boxes`: loadRes,
evaluate, accumulate, summarize at maxDets [1, 10, N]), on one generated set, each in its own
process: the seconds, their ratio, and the equality of the 12 stats and of eval['precision'].
`--path analysis` times `evaluate_boxes` instead (the error analysis', TIDE's and evaluate_raster's
COCOeval, every detection kept) and checks its per-detection matches too. `--rotated` turns every
box (XYWHA, any angle) and evaluates with rotated IoU, as RotatedCOCOEvaluator does; each run
also reports the seconds of the rotated IoUs themselves.

    .venv/bin/python benchmarks/coco_eval.py                          # 100 images x 10,000 boxes, 80 classes
    .venv/bin/python benchmarks/coco_eval.py --images 10 --boxes 2000  # a quick look
    .venv/bin/python benchmarks/coco_eval.py --path analysis --images 20 --boxes 2000
    .venv/bin/python benchmarks/coco_eval.py --rotated --images 20 --boxes 2000 --classes 20

The set: per image `--boxes` ground-truth boxes (3% crowd) of `--classes` classes on a 4000 x 4000
canvas; detections: 80% of them jittered (10% given another class) plus 20% random boxes, scores
uniform on a 0.001 grid (ties, as real scores have). Rotated: each box about its centre at an
angle uniform on [-180, 180), a found one's turned by a further N(0, 5 degrees). Writes
`<out>/coco_eval_<path>[_rotated].json` and `.md`.
"""
import argparse
import contextlib
import io
import functools
import time
from pathlib import Path

import numpy as np

import harness

PATHS = {
    "evaluator": "FastCOCOEvaluator's evaluation (evaluate_coco_boxes: loadRes, evaluate, accumulate, summarize)",
    "analysis": "evaluate_boxes (analyze_results' error analysis, evaluate_raster): every detection, 4 area ranges",
}
ROTATED_PATHS = {
    "evaluator": "RotatedCOCOEvaluator's evaluation (evaluate_coco_boxes(rotated=True): loadRes, evaluate, accumulate, "
                 "summarize)",
    "analysis": PATHS["analysis"],
}  # fmt: skip
AREAS = ("all", "small", "medium", "large")
SIZE = 4000.0  # the canvas (pixels): boxes of 8..150 px, as a tiled large image's
EQUAL_TO = 1e-6  # the bar for "the same numbers"


def generate(images: int, boxes: int, classes: int, seed: int = 0, rotated: bool = False) -> dict:
    """The set as arrays: ground truth (gt_*) and detections (det_*), ids from 1, boxes XYWH (XYWHA when `rotated`)."""
    rng = np.random.default_rng(seed)
    n = images * boxes
    image = np.repeat(np.arange(1, images + 1), boxes)
    gt_boxes = np.concatenate([rng.uniform(0, SIZE - 150, (n, 2)), rng.uniform(8, 150, (n, 2))], 1)
    label = rng.integers(1, classes + 1, n)
    crowd = rng.random(n) < 0.03
    found = rng.random(n) < 0.8
    jitter = gt_boxes[found] + rng.normal(0, 0.08, (found.sum(), 4)) * np.repeat(gt_boxes[found, 2:], 2, axis=1)
    jitter[:, 2:] = np.maximum(jitter[:, 2:], 1.0)
    det_label = np.where(rng.random(found.sum()) < 0.9, label[found], rng.integers(1, classes + 1, found.sum()))
    false = n // 5
    det_image = np.r_[image[found], rng.integers(1, images + 1, false)]
    det_boxes = np.r_[jitter, np.concatenate([rng.uniform(0, SIZE - 150, (false, 2)), rng.uniform(8, 150, (false, 2))], 1)]
    det_label = np.r_[det_label, rng.integers(1, classes + 1, false)]
    if rotated:  # its own generator: the axis-aligned set stays the same
        turn = np.random.default_rng(seed + 1)
        gt_angle = turn.uniform(-180, 180, n)
        det_angle = np.r_[gt_angle[found] + turn.normal(0, 5, found.sum()), turn.uniform(-180, 180, false)]
        gt_boxes, det_boxes = _xywha(gt_boxes, gt_angle), _xywha(det_boxes, det_angle)
    return {"gt_image": image, "gt_label": label, "gt_boxes": gt_boxes, "gt_crowd": crowd,
            "det_image": det_image, "det_label": det_label, "det_boxes": det_boxes,
            "det_scores": np.round(rng.uniform(0.001, 1.0, len(det_image)), 3)}  # fmt: skip


def _xywha(xywh: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(N, 5) XYWHA boxes of the same centre and size as the (N, 4) XYWH ones, at `angle` (N,) degrees."""
    return np.c_[xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:], angle]


def coco_dicts(a: dict, images: int, classes: int):
    """The ground truth as a COCO dict and the detections as COCO results dicts."""
    columns = (a["gt_image"].tolist(), a["gt_label"].tolist(), a["gt_boxes"].tolist(), a["gt_crowd"].tolist())
    annotations = [
        {"id": i + 1, "image_id": im, "category_id": k, "bbox": b, "area": b[2] * b[3], "iscrowd": int(c)}
        for i, (im, k, b, c) in enumerate(zip(*columns))
    ]  # fmt: skip
    columns = (a["det_image"].tolist(), a["det_label"].tolist(), a["det_boxes"].tolist(), a["det_scores"].tolist())
    results = [{"image_id": im, "category_id": k, "bbox": b, "score": s} for im, k, b, s in zip(*columns)]
    gt = {"images": [{"id": i, "width": SIZE, "height": SIZE} for i in range(1, images + 1)],
          "categories": [{"id": k, "name": str(k)} for k in range(1, classes + 1)], "annotations": annotations}  # fmt: skip
    return gt, results


def evaluator_run(args, arrays: dict, use_fast_impl: bool):
    """FastCOCOEvaluator's evaluation (evaluate_coco_boxes) of the set: seconds, results, arrays to compare."""
    from pycocotools.coco import COCO

    from retina_plugin.evaluation import evaluate_coco_boxes

    gt, results = coco_dicts(arrays, args.images, args.classes)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()  # as COCOEvaluator holds it, built before evaluation
        coco_gt.dataset = gt
        coco_gt.createIndex()
    printed = io.StringIO()
    start = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(printed):
        coco_eval = evaluate_coco_boxes(coco_gt, results, [1, 10, args.max_dets], use_fast_impl=use_fast_impl,
                                        rotated=args.rotated)  # fmt: skip
    seconds = time.perf_counter() - start[0], time.process_time() - start[1]
    summary = [line for line in printed.getvalue().splitlines() if "Average" in line]
    return seconds, {"stats": [float(s) for s in coco_eval.stats], "summary": summary}, {"precision": coco_eval.eval["precision"]}


def analysis_run(args, a: dict, use_fast_impl: bool):
    """evaluate_boxes of the set (every detection, COCO's IoUs, the four area ranges): seconds, APs, arrays."""
    from retina_plugin.evaluation import COCO_IOU_THRESHOLDS, DetectedBoxes, GroundTruthBoxes, evaluate_boxes

    gt = GroundTruthBoxes(a["gt_image"] - 1, a["gt_label"] - 1, a["gt_boxes"], a["gt_crowd"])
    dets = DetectedBoxes(a["det_image"] - 1, a["det_label"] - 1, a["det_boxes"], a["det_scores"])
    start = time.perf_counter(), time.process_time()
    ev = evaluate_boxes(gt, dets, args.images, args.classes, COCO_IOU_THRESHOLDS, None, AREAS, use_fast_impl)
    seconds = time.perf_counter() - start[0], time.process_time() - start[1]
    stats = [ev.mean_ap(), ev.mean_ap([0.5]), ev.mean_ap([0.75]), *(ev.mean_ap(area=area) for area in AREAS[1:])]
    arrays = {key: getattr(ev, key) for key in ("precision", "det_gt", "det_ignored", "gt_matched", "num_gt")}
    return seconds, {"stats": stats, "summary": []}, arrays


IOU_SECONDS = [0.0]  # the seconds of the rotated IoUs in this worker


def _timed(cls, name: str) -> None:
    """cls.<name> adding its seconds to IOU_SECONDS."""
    method = getattr(cls, name)

    @functools.wraps(method)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            IOU_SECONDS[0] += time.perf_counter() - start

    setattr(cls, name, timed)


def run_worker(args):
    """One COCOeval on the generated set: its seconds and results; its arrays saved beside --worker-out."""
    from retina_plugin.evaluation import cocoeval_class, cocoeval_name
    from retina_plugin.evaluation.rotated_cocoeval import RotatedCOCOeval, RotatedIoU

    use_fast_impl = args.worker == "faster-coco-eval"
    # the IoUs: pycocotools' computeIoU per image and class; faster-coco-eval's all at once after its _prepare
    _timed(RotatedCOCOeval, "computeIoU")
    _timed(RotatedIoU, "_all_ious")
    arrays = generate(args.images, args.boxes, args.classes, rotated=args.rotated)
    run = evaluator_run if args.path == "evaluator" else analysis_run
    seconds, results, compared = run(args, arrays, use_fast_impl)
    np.savez(Path(args.worker_out).with_suffix(".npz"), **compared)
    return {
        "implementation": cocoeval_name(cocoeval_class(use_fast_impl, args.max_dets, rotated=args.rotated)),
        "seconds": seconds[0], "cpu_seconds": seconds[1],  # wall clock, and this process's CPU time
        "iou_seconds": IOU_SECONDS[0] if args.rotated else None,
        "ground_truth": len(arrays["gt_image"]), "detections": len(arrays["det_image"]),
        "peak_rss_mib": harness.proc_status_mib("VmHWM"), **results,
    }  # fmt: skip


def run_driver(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = ["--images", args.images, "--boxes", args.boxes, "--classes", args.classes, "--max-dets", args.max_dets,
               "--path", args.path] + (["--rotated"] if args.rotated else [])  # fmt: skip
    name = f"coco_eval_{args.path}" + ("_rotated" if args.rotated else "")
    load_start = harness.load_average()
    runs, arrays = {}, {}
    for impl in ("pycocotools", "faster-coco-eval"):
        print(f"{impl}: evaluating ...", flush=True)
        runs[impl] = harness.spawn_worker(__file__, impl, options, out / f"{name}_{impl}.json")
        arrays[impl] = dict(np.load(out / f"{name}_{impl}.npz"))
    ref, fast = runs["pycocotools"], runs["faster-coco-eval"]
    stats_diff = float(np.abs(np.subtract(ref["stats"], fast["stats"], dtype=float)).max())
    precision_diff = float(np.abs(arrays["pycocotools"]["precision"] - arrays["faster-coco-eval"]["precision"]).max())
    matches_equal = all(np.array_equal(arrays["pycocotools"][k], arrays["faster-coco-eval"][k])
                        for k in arrays["pycocotools"] if k != "precision")  # fmt: skip
    summary = {
        "machine": harness.machine_info("cpu", None), "load_average": [load_start, harness.load_average()],
        "path": args.path, "rotated": args.rotated, "images": args.images, "classes": args.classes, "max_dets": [1, 10, args.max_dets],
        "ground_truth": ref["ground_truth"], "detections": ref["detections"], "runs": runs,
        "ratio": ref["seconds"] / fast["seconds"], "cpu_ratio": ref["cpu_seconds"] / fast["cpu_seconds"],
        "max_stats_difference": stats_diff,
        "max_precision_difference": precision_diff, "same_summary_lines": ref["summary"] == fast["summary"],
        "matches_equal": matches_equal,
    }  # fmt: skip
    summary["equal"] = stats_diff <= EQUAL_TO and precision_diff <= EQUAL_TO and matches_equal and summary["same_summary_lines"]
    harness.write_results(out, name, summary, table(summary))


def table(s) -> str:
    if s["path"] == "evaluator":
        checked = (f"12 stats max |diff| {s['max_stats_difference']:.1e}, eval['precision'] max |diff| "
                   f"{s['max_precision_difference']:.1e}, printed summary lines "
                   f"{'identical' if s['same_summary_lines'] else 'DIFFERENT'}")  # fmt: skip
    else:
        checked = (f"6 APs max |diff| {s['max_stats_difference']:.1e}, precision max |diff| "
                   f"{s['max_precision_difference']:.1e}, per-detection matches and ignores, matched boxes "
                   f"{'identical' if s['matches_equal'] else 'DIFFERENT'}")  # fmt: skip
    rotated = s.get("rotated")
    lines = [
        (f"Rotated boxes (rotated IoU): {ROTATED_PATHS[s['path']]}" if rotated else PATHS[s["path"]])
        + f" on {s['machine']['cpu_model']} (load average {s['load_average'][0]:.1f} -> "
        f"{s['load_average'][1]:.1f}): {s['images']} images, {s['classes']} classes, {s['ground_truth']:,} "
        f"ground-truth boxes + {s['detections']:,} detections"
        + (f", maxDets {s['max_dets']}" if s["path"] == "evaluator" else ""),
        "",
        "| COCOeval | seconds | CPU seconds | peak RSS (MiB) |" + (" rotated IoU seconds |" if rotated else ""),
        "|---|---|---|---|" + ("---|" if rotated else ""),
        *[f"| {r['implementation']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_rss_mib']:.0f} |"
          + (f" {r['iou_seconds']:.2f} ({r['iou_seconds'] / r['seconds']:.0%}) |" if rotated else "")
          for r in s["runs"].values()],
        "",
        f"faster-coco-eval / pycocotools: **{s['ratio']:.1f}x** faster ({s['cpu_ratio']:.1f}x in CPU time). "
        f"Equality: {checked}: "
        f"{'equal' if s['equal'] else 'NOT EQUAL'} (to {EQUAL_TO:g}).",
    ]
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--boxes", type=int, default=10000, help="ground-truth boxes per image")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--max-dets", type=int, default=100, help="N of maxDets [1, 10, N] (COCOEvaluator's max_dets_per_image)")
    parser.add_argument("--path", choices=sorted(PATHS), default="evaluator", help="what evaluates: " + "; ".join(
        f"{k}: {v}" for k, v in PATHS.items()))
    parser.add_argument("--rotated", action="store_true", help="XYWHA boxes at any angle, rotated IoU")
    parser.add_argument("--out", default=str(harness.ROOT / "benchmarks" / "results"))
    harness.add_worker_arguments(parser, choices=["pycocotools", "faster-coco-eval"])
    return parser.parse_args()


if __name__ == "__main__":
    harness.main(parse_args(), run_worker, run_driver)
