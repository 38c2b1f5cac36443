"""
RetinaNetPlugin R50-FPN (bench.py's weights) against the runtimes CPU users deploy it with:
ONNX Runtime and OpenVINO, in float32 and int8, on one 800x1216 image, same thread count.

    python benchmarks/runtimes.py [--quick] [--repeats 5] [--threads 2] [--no-ap] [--out benchmarks/results]

Needs the `bench` extra (`make bench`, or `pip install -e .[bench]`: openvino, nncf).

Preparation (this process): ours' weights; the whole detector exported to ONNX with the project's
export (retina_plugin.deploy.export, as `tools/export_model.py --format onnx`), traced on the
timed image; from it, the graph of the network alone (image -> normalization, padding, backbone,
head -> per-level logits and deltas), cut at the head's outputs with onnx.utils.extract_model.
Calibrated on the same two images as ours' int8 (tasks.INT8_CALIBRATION_SEEDS), that network is
quantized by `onnxruntime.quantization.quantize_static` (QDQ, int8 weights per channel, uint8
activations) and by `nncf.quantize` (OpenVINO). Decoding and NMS stay float everywhere: the
onnxruntime quantizer fails on the postprocess part of the graph.

Each row runs in its own worker process (`--worker ROW`; a runtime loaded beside torch slows
torch down), one after the other, for `--repeats` rounds: a worker loads its model, makes one
untimed call and times two, per part, and reports their median. The table gives the median (min) over
the rounds. Two parts are timed:

  network   image -> head outputs: the part every int8 path quantizes, timed for every row
  detector  image -> detections: the whole model (float32 rows; no int8 export exists for the
            runtimes, whose int8 network would need the float postprocess of another library)

Every row's head outputs go through ours' float postprocess (DecodeAndNMS) in the driver, for
the agreement columns: an int8 row against its own float32, a float32 runtime against ours.

The accuracy of the int8 paths, which random weights cannot show, follows from int8_ap.py:
the COCO AP on the embedded val split of `make run`'s trained model (skipped, with a line
saying so, when its weights are missing; `--no-ap` skips it).

bench.py runs this script after its own table when the bench extra is installed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inputs import INFER_SIZE, bgr_tensor, inference_sample, synthetic_image
from tasks import INT8_CALIBRATION_SEEDS

ROOT = Path(__file__).resolve().parents[1]
# row: (runtime, precision); float32 rows before int8 ones, ours first in each.
ROWS = {
    "ours": ("ours", "float32"),
    "ours_direct": ("ours, WINOGRAD False", "float32"),
    "ours_compiled": ("ours, torch.compile", "float32"),
    "onnxruntime": ("ONNX Runtime", "float32"),
    "openvino": ("OpenVINO", "float32"),
    "ours_int8": ("ours", "int8"),
    "onnxruntime_int8": ("ONNX Runtime", "int8"),
    "openvino_int8": ("OpenVINO", "int8"),
}
FLOAT32_OF = {"ours_int8": "ours", "onnxruntime_int8": "onnxruntime", "openvino_int8": "openvino"}
WARMUP, CALLS = 1, 2
# The targets: ours / the fastest runtime of the same precision.
TARGETS = {"float32": 1.1, "int8": 1.2}
MAX_INT8_AP_COST = 0.3  # AP below float32 on the embedded val split


def timed_image():
    """The timed image as the exported model takes it: (3, H, W) float32 BGR 0..255, numpy."""
    return bgr_tensor(inference_sample(), "cpu").numpy()


def calibration_images():
    return [bgr_tensor(synthetic_image(*INFER_SIZE, seed=s)[0], "cpu").numpy() for s in INT8_CALIBRATION_SEEDS]


# ---- preparation ---------------------------------------------------------------------------

def prepare(workdir, log):
    """Write weights.pth, detector.onnx, network.onnx, network_int8.onnx, network_int8.xml into workdir."""
    import torch

    from models import build_ours
    from retina_plugin.deploy.export import export_model

    w = Path(workdir)
    model = build_ours("cpu")
    torch.save(model.state_dict(), w / "weights.pth")
    start = time.perf_counter()
    os.replace(export_model(model, torch.from_numpy(timed_image()), str(w / "export"), "onnx"), w / "detector.onnx")
    log(f"exported the detector to ONNX ({time.perf_counter() - start:.0f} s)")
    extract_network(w / "detector.onnx", w / "network.onnx")
    start = time.perf_counter()
    quantize_onnxruntime(w / "network.onnx", w / "network_int8.onnx")
    log(f"onnxruntime.quantization.quantize_static ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    quantize_openvino(w / "network.onnx", w / "network_int8.xml")
    log(f"nncf.quantize ({time.perf_counter() - start:.0f} s)")
    return model


def head_outputs(graph):
    """
    The head's output tensors in the exported graph, in the order the postprocess first reads
    them (logits of P3..P7, then deltas): outputs of nodes in the head's scope that nodes
    outside it read.
    """
    producer = {o: n for n in graph.node for o in n.output}
    names = []
    for node in graph.node:
        if node.name.startswith("/model/head/"):
            continue
        for i in node.input:
            p = producer.get(i)
            if p is not None and p.name.startswith("/model/head/") and p.op_type != "Constant" and i not in names:
                names.append(i)
    return names


def extract_network(detector_path, network_path):
    import onnx
    import onnx.utils

    outputs = head_outputs(onnx.load(str(detector_path)).graph)
    onnx.utils.extract_model(str(detector_path), str(network_path), ["image"], outputs)


def quantize_onnxruntime(network_path, int8_path, images=None):
    """`quantize_static` of the network graph, calibrated on `images` ((3, H, W) float32 numpy; default calibration_images())."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration_images() if images is None else images)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"image": image}

    prepared = str(network_path).replace(".onnx", "_prep.onnx")
    quant_pre_process(str(network_path), prepared, skip_symbolic_shape=True)
    quantize_static(
        prepared, str(int8_path), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


def quantize_openvino(network_path, int8_path, images=None):
    """`nncf.quantize` of the network graph, calibrated on `images` (as quantize_onnxruntime)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(network_path))
    images = calibration_images() if images is None else images
    quantized = nncf.quantize(model, nncf.Dataset(images), subset_size=len(images))
    ov.save_model(quantized, str(int8_path))


# ---- workers -------------------------------------------------------------------------------

class Ours:
    parts = ("network", "detector")

    def __init__(self, row, workdir, threads):
        import torch

        from models import build_ours, calibrated_int8

        torch.set_num_threads(threads)
        opts = ["MODEL.RETINA_PLUGIN.WINOGRAD", False] if row == "ours_direct" else []
        model = build_ours("cpu", state_dict=torch.load(Path(workdir) / "weights.pth"), opts=opts)
        if row == "ours_compiled":
            model.compile_inference = True  # MODEL.RETINA_PLUGIN.COMPILE
        if row == "ours_int8":
            model = calibrated_int8(model, *INFER_SIZE, INT8_CALIBRATION_SEEDS)
        self.model, self.torch = model, torch
        self.compile_s = None
        if row == "ours_compiled":  # the first eval forward compiles: time it apart
            start = time.perf_counter()
            self.detector(timed_image())
            self.compile_s = time.perf_counter() - start

    def network(self, image):
        model, torch = self.model, self.torch
        with torch.no_grad():
            images = model.preprocess_image([{"image": torch.from_numpy(image)}])
            backbone, head = model.inference_modules()
            features = backbone(images.tensor.contiguous(memory_format=model.memory_format))
            logits, deltas = head([features[f] for f in model.head_in_features])
        return [x.numpy() for x in logits + deltas]

    def detector(self, image):
        with self.torch.no_grad():
            instances = self.model([{"image": self.torch.from_numpy(image)}])[0]["instances"]
        return [instances.pred_boxes.tensor.numpy(), instances.scores.numpy(), instances.pred_classes.numpy()]


class OnnxRuntime:
    def __init__(self, row, workdir, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(name):
            return ort.InferenceSession(str(Path(workdir) / name), options, providers=["CPUExecutionProvider"])

        self.sessions = {"network": session("network_int8.onnx" if row.endswith("int8") else "network.onnx")}
        if not row.endswith("int8"):
            self.sessions["detector"] = session("detector.onnx")
        self.parts = tuple(self.sessions)

    def network(self, image):
        return self.sessions["network"].run(None, {"image": image})

    def detector(self, image):
        return self.sessions["detector"].run(None, {"image": image})


def openvino_config(threads):
    """OpenVINO's CPU settings for every OpenVINO row (and benchmarks/int8_profile.py)."""
    # f32 hint: on CPUs with bfloat16 OpenVINO may pick it for float32 models.
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


class OpenVino:
    def __init__(self, row, workdir, threads):
        import openvino as ov

        core = ov.Core()
        config = openvino_config(threads)

        def compiled(name):
            return core.compile_model(core.read_model(str(Path(workdir) / name)), "CPU", config)

        self.models = {"network": compiled("network_int8.xml" if row.endswith("int8") else "network.onnx")}
        if not row.endswith("int8"):
            self.models["detector"] = compiled("detector.onnx")
        self.parts = tuple(self.models)

    def _run(self, part, image):
        model = self.models[part]
        result = model({0: image})
        return [result[o] for o in model.outputs]

    def network(self, image):
        return self._run("network", image)

    def detector(self, image):
        return self._run("detector", image)


RUNNERS = {"ours": Ours, "ours_direct": Ours, "ours_compiled": Ours, "ours_int8": Ours, "onnxruntime": OnnxRuntime,
           "onnxruntime_int8": OnnxRuntime, "openvino": OpenVino, "openvino_int8": OpenVino}  # fmt: skip


def run_worker(args):
    start = time.perf_counter()
    runner = RUNNERS[args.worker](args.worker, args.workdir, args.threads)
    result = {"load_s": time.perf_counter() - start, "compile_s": getattr(runner, "compile_s", None)}
    image = timed_image()
    for part in runner.parts:
        fn = getattr(runner, part)
        for _ in range(WARMUP):
            out = fn(image)
        times = []
        for _ in range(CALLS):
            t = time.perf_counter()
            fn(image)
            times.append(time.perf_counter() - t)
        result[part] = statistics.median(times)
        if args.save_outputs:
            np.savez(Path(args.workdir) / f"{args.worker}-{part}.npz", *out)
    Path(args.worker_out).write_text(json.dumps(result))


def spawn_worker(row, args, workdir, save_outputs):
    out = Path(workdir) / f"{row}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", row, "--workdir", str(workdir),
           "--threads", str(args.threads), "--worker-out", str(out)] + (["--save-outputs"] if save_outputs else [])  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), cwd=str(ROOT))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"worker {row} failed with exit code {proc.returncode}")
    return json.loads(out.read_text())


# ---- driver --------------------------------------------------------------------------------

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


def run_driver(args):
    import torch

    from report import machine_info, machine_name

    start = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    rows = list(ROWS)
    with tempfile.TemporaryDirectory() as workdir:
        model = prepare(workdir, lambda s: print(s, flush=True))
        rounds = {row: [] for row in rows}
        for r in range(args.repeats):
            for row in rows:
                result = spawn_worker(row, args, workdir, save_outputs=r == 0)
                rounds[row].append(result)
                parts = ", ".join(f"{p} {result[p]:.3f} s" for p in ("network", "detector") if p in result)
                print(f"  round {r + 1}/{args.repeats} {row:17s} {parts}", flush=True)
        torch.set_num_threads(args.threads)
        agree = agreement(model, workdir, rows)
        ap_rows = int8_accuracy(args, Path(workdir) / "ap")

    info = machine_info(argparse.Namespace(device="cpu", threads=args.threads))
    summary = {"machine": info, "threads": args.threads, "repeats": args.repeats, "rounds": rounds, "agreement": agree, "int8_ap": ap_rows,
               "seconds": time.perf_counter() - start, "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]}}  # fmt: skip
    table = markdown(summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"runtimes_{machine_name(info)}"
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / f"{name}.md").write_text(table)
    print()
    print(table)
    print(f"wrote {out / name}.json and .md")


def int8_accuracy(args, workdir):
    """int8_ap.py's rows (AP of every int8 path on the embedded val split), or None without `make run`'s weights."""
    import int8_ap

    if args.no_ap:
        return None
    if not int8_ap.DEFAULT_WEIGHTS.is_file():
        print(f"AP rows skipped: {int8_ap.DEFAULT_WEIGHTS.relative_to(ROOT)} not found (`make run` trains it)", flush=True)
        return None
    workdir.mkdir()
    start = time.perf_counter()
    rows = int8_ap.int8_ap_rows(int8_ap.DEFAULT_WEIGHTS, args.threads, workdir, lambda s: print(f"  AP: {s}", flush=True))
    return {"rows": rows, "seconds": time.perf_counter() - start}


def _stats(summary, row, part):
    values = [r[part] for r in summary["rounds"][row] if part in r]
    return (statistics.median(values), min(values)) if values else None


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
        import int8_ap

        lines += ["", f"**Accuracy of the int8 paths** (`benchmarks/int8_ap.py`, {ap['seconds']:.0f} s): COCO AP on the embedded "
                  "val split of `make run`'s model, every int8 path calibrated on the same 32 shapes_train images:", ""]  # fmt: skip
        lines += int8_ap.table_lines(ap["rows"])
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
        f"took {compile_s[0]:.1f} s in the first worker run and {statistics.median(compile_s):.1f} s (median) over all; "
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


def library_versions():
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("onnxruntime", "openvino", "nncf"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    parser.add_argument("--repeats", type=int, default=5, help="worker runs per row, taking turns")
    parser.add_argument("--quick", action="store_true", help="2 rounds (for development)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-ap", action="store_true", help="skip the int8 paths' AP (int8_ap.py, ~1 min)")
    parser.add_argument("--worker", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--save-outputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    return args


def main():
    args = parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
