"""
COCO box evaluation at scale: pycocotools' COCOeval against faster-coco-eval's, as
`FastCOCOEvaluator` runs them (`retina_plugin.evaluation.evaluate_coco_boxes`: loadRes,
evaluate, accumulate, summarize at maxDets [1, 10, N]), on one generated set, each in its own
process: the seconds, their ratio, and the equality of the 12 stats and of eval['precision'].

    .venv/bin/python benchmarks/coco_eval.py                          # 100 images x 10,000 boxes, 80 classes
    .venv/bin/python benchmarks/coco_eval.py --images 10 --boxes 2000  # a quick look

The set: per image `--boxes` ground-truth boxes (3% crowd) of `--classes` classes on a 4000 x 4000
canvas; detections: 80% of them jittered (10% given another class) plus 20% random boxes, scores
uniform on a 0.001 grid (ties, as real scores have). Writes `<out>/coco_eval.json` and `.md`.
"""
import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np

import harness

SIZE = 4000.0  # the canvas (pixels): boxes of 8..150 px, as a tiled large image's
EQUAL_TO = 1e-6  # the bar for "the same numbers"


def generate(images: int, boxes: int, classes: int, seed: int = 0):
    """The ground truth as a COCO dict and the detections as COCO results dicts."""
    rng = np.random.default_rng(seed)
    n = images * boxes
    image = np.repeat(np.arange(1, images + 1), boxes)
    xy = rng.uniform(0, SIZE - 150, (n, 2))
    wh = rng.uniform(8, 150, (n, 2))
    gt_boxes = np.concatenate([xy, wh], 1)
    label = rng.integers(1, classes + 1, n)
    crowd = rng.random(n) < 0.03
    annotations = [
        {"id": i + 1, "image_id": im, "category_id": k, "bbox": b, "area": b[2] * b[3], "iscrowd": int(c)}
        for i, (im, k, b, c) in enumerate(zip(image.tolist(), label.tolist(), gt_boxes.tolist(), crowd.tolist()))
    ]  # fmt: skip
    found = rng.random(n) < 0.8
    jitter = gt_boxes[found] + rng.normal(0, 0.08, (found.sum(), 4)) * np.repeat(gt_boxes[found, 2:], 2, axis=1)
    jitter[:, 2:] = np.maximum(jitter[:, 2:], 1.0)
    det_label = np.where(rng.random(found.sum()) < 0.9, label[found], rng.integers(1, classes + 1, found.sum()))
    false = n // 5
    det_image = np.r_[image[found], rng.integers(1, images + 1, false)]
    det_boxes = np.r_[jitter, np.concatenate([rng.uniform(0, SIZE - 150, (false, 2)), rng.uniform(8, 150, (false, 2))], 1)]
    det_label = np.r_[det_label, rng.integers(1, classes + 1, false)]
    scores = np.round(rng.uniform(0.001, 1.0, len(det_image)), 3)
    results = [
        {"image_id": im, "category_id": k, "bbox": b, "score": s}
        for im, k, b, s in zip(det_image.tolist(), det_label.tolist(), det_boxes.tolist(), scores.tolist())
    ]  # fmt: skip
    gt = {"images": [{"id": i, "width": SIZE, "height": SIZE} for i in range(1, images + 1)],
          "categories": [{"id": k, "name": str(k)} for k in range(1, classes + 1)], "annotations": annotations}  # fmt: skip
    return gt, results


def run_worker(args):
    """One implementation on the generated set: its seconds, stats and (saved beside) eval['precision']."""
    from pycocotools.coco import COCO

    from retina_plugin.evaluation import cocoeval_class, cocoeval_name, evaluate_coco_boxes

    use_fast_impl = args.worker == "faster-coco-eval"
    gt, results = generate(args.images, args.boxes, args.classes)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()  # as COCOEvaluator holds it, built before evaluation
        coco_gt.dataset = gt
        coco_gt.createIndex()
    max_dets = [1, 10, args.max_dets]
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        coco_eval = evaluate_coco_boxes(coco_gt, results, max_dets, use_fast_impl=use_fast_impl)
    seconds = time.perf_counter() - start
    np.save(Path(args.worker_out).with_suffix(".precision.npy"), coco_eval.eval["precision"])
    return {
        "implementation": cocoeval_name(cocoeval_class(use_fast_impl, args.max_dets)), "seconds": seconds,
        "stats": [float(s) for s in coco_eval.stats], "summary": [l for l in printed.getvalue().splitlines() if "Average" in l],
        "ground_truth": len(gt["annotations"]), "detections": len(results),
        "peak_rss_mib": harness.proc_status_mib("VmHWM"),
    }  # fmt: skip


def run_driver(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = ["--images", args.images, "--boxes", args.boxes, "--classes", args.classes, "--max-dets", args.max_dets]
    load_start = harness.load_average()
    runs = {}
    for name in ("pycocotools", "faster-coco-eval"):
        print(f"{name}: evaluating ...", flush=True)
        runs[name] = harness.spawn_worker(__file__, name, sizes, out / f"coco_eval_{name}.json")
        runs[name]["precision"] = np.load(out / f"coco_eval_{name}.precision.npy")
    ref, fast = runs["pycocotools"], runs["faster-coco-eval"]
    stats_diff = float(np.abs(np.subtract(ref["stats"], fast["stats"])).max())
    precision_diff = float(np.abs(ref["precision"] - fast["precision"]).max())
    summary = {
        "machine": harness.machine_info("cpu", None), "load_average": [load_start, harness.load_average()],
        "images": args.images, "classes": args.classes, "max_dets": [1, 10, args.max_dets],
        "ground_truth": ref["ground_truth"], "detections": ref["detections"],
        "runs": {k: {key: v for key, v in r.items() if key != "precision"} for k, r in runs.items()},
        "ratio": ref["seconds"] / fast["seconds"], "max_stats_difference": stats_diff,
        "max_precision_difference": precision_diff, "same_summary_lines": ref["summary"] == fast["summary"],
        "equal": stats_diff <= EQUAL_TO and precision_diff <= EQUAL_TO and ref["summary"] == fast["summary"],
    }  # fmt: skip
    harness.write_results(out, "coco_eval", summary, table(summary))


def table(s) -> str:
    runs = s["runs"]
    lines = [
        f"COCO box evaluation on {s['machine']['cpu_model']} (load average {s['load_average'][0]:.1f} -> "
        f"{s['load_average'][1]:.1f}): {s['images']} images, {s['classes']} classes, {s['ground_truth']:,} "
        f"ground-truth boxes + {s['detections']:,} detections, maxDets {s['max_dets']}",
        "",
        "| COCOeval | seconds | peak RSS (MiB) |",
        "|---|---|---|",
        *[f"| {r['implementation']} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} |" for r in runs.values()],
        "",
        f"faster-coco-eval / pycocotools: **{s['ratio']:.1f}x** faster. Equality: 12 stats max |diff| "
        f"{s['max_stats_difference']:.1e}, eval['precision'] max |diff| {s['max_precision_difference']:.1e}, "
        f"printed summary lines {'identical' if s['same_summary_lines'] else 'DIFFERENT'}: "
        f"{'equal' if s['equal'] else 'NOT EQUAL'} (to {EQUAL_TO:g}).",
    ]
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--boxes", type=int, default=10000, help="ground-truth boxes per image")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--max-dets", type=int, default=100, help="N of maxDets [1, 10, N] (COCOEvaluator's max_dets_per_image)")
    parser.add_argument("--out", default=str(harness.ROOT / "benchmarks" / "results"))
    harness.add_worker_arguments(parser, choices=["pycocotools", "faster-coco-eval"])
    return parser.parse_args()


if __name__ == "__main__":
    harness.main(parse_args(), run_worker, run_driver)
