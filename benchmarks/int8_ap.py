"""
What int8 costs in accuracy: the COCO box AP on the embedded shapes_val split (100 images,
256x256, 3 classes) of the trained ResNet-18-FPN of configs/shapes_R18_cpu.yaml, in four paths:

  ours float32        the Detectron2 model built from the config, with the weights
  ours int8           retina_plugin.inference.int8 (calibrate_int8, quantize_int8)
  ONNX Runtime int8   the network graph (below) quantized by onnxruntime.quantization.quantize_static
  OpenVINO int8       that graph quantized by nncf.quantize

    python benchmarks/int8_ap.py [--weights output/shapes_R18_cpu/model_final.pth] [--threads 1] [--out benchmarks/results]

Needs the `bench` extra (onnx, onnxruntime, openvino, nncf) and the trained weights (`make run`).

Every int8 path is calibrated on the images tools/calibrate_int8.py uses by default: 32 of
the config's first DATASETS.TRAIN (shapes_train), evenly spaced, mapped as at test time; so
ours' rows are what `tools/calibrate_int8.py --eval` computes (int8 to a few hundredths of AP:
oneDNN's kernels, and so int8's AP, change with the thread count). The runtimes' network is
made as in runtimes.py (`prepare`): the project's ONNX export of the float model
(retina_plugin.deploy.export), traced on the first calibration image, cut at the head's
outputs (image -> normalization, padding, backbone, head -> per-level logits and deltas),
quantized with runtimes.py's settings (ONNX Runtime: quant_pre_process, then QDQ, int8
weights per channel, uint8 activations; OpenVINO: nncf's default preset). Their head outputs
go through ours' float postprocess (decoding, NMS, rescaling to the original image size as
Detectron2's detector_postprocess). The shapes images are 256x256 and the test resize keeps
them so: every image is checked to have the traced size.

All four are evaluated by the evaluator and loader `train_net.py --eval-only` uses
(retina_plugin.inference.evaluation: COCOEvaluator), through
retina_plugin.inference.evaluation.evaluate. It writes int8_ap.json and int8_ap.md to --out.
"""
import argparse
import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtimes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shapes_R18_cpu.yaml"
DEFAULT_WEIGHTS = ROOT / "output" / "shapes_R18_cpu" / "model_final.pth"
TEST_DATASET = "shapes_val"
CALIBRATION_IMAGES = 32  # tools/calibrate_int8.py's default --num-images
TABLE_KEYS = ("AP", "AP50", "AP75")
# runtimes.py's int8 rows: its quantizer and the file its runner loads.
RUNTIME_QUANTIZERS = {
    "onnxruntime_int8": (runtimes.quantize_onnxruntime, "network_int8.onnx"),
    "openvino_int8": (runtimes.quantize_openvino, "network_int8.xml"),
}


class NetworkDetector:
    """
    A model for inference_on_dataset: a runtime's network (runtimes.OnnxRuntime or
    runtimes.OpenVino) gives the head outputs of each image, ours' float postprocess the
    detections, at the image's original size.
    """

    def __init__(self, model, runner, traced_size):
        self.model, self.runner, self.traced_size = model, runner, traced_size
        self.anchors = anchors_for(model, traced_size)

    def __call__(self, batched_inputs):
        outputs = []
        for inputs in batched_inputs:
            image = inputs["image"]
            size = tuple(image.shape[-2:])
            if size != self.traced_size:
                raise ValueError(
                    f"{inputs['file_name']} is {size} after the test resize; the network is traced at {self.traced_size}"
                )
            arrays = [torch.from_numpy(a) for a in self.runner.network(image.float().numpy())]
            levels = len(arrays) // 2
            output_size = (inputs.get("height", size[0]), inputs.get("width", size[1]))
            (instances,) = self.model.postprocess(self.anchors, arrays[:levels], arrays[levels:], [size], [output_size])
            outputs.append({"instances": instances})
        return outputs


def anchors_for(model, size):
    """Ours' anchors per level for a (C, H, W) input of (H, W) `size`, from the feature maps the backbone gives it."""
    from retina_plugin.modeling.anchor_generator import anchor_tensors

    with torch.no_grad():
        images = model.preprocess_image([{"image": torch.zeros(model.pixel_mean.numel(), *size)}])
        features = model.backbone(images.tensor)
    return anchor_tensors(model.anchor_generator, [features[f] for f in model.head_in_features])


def int8_ap_rows(weights, threads, workdir, log):
    """
    The four paths' rows, ours float32 first: {"path", "precision", AP keys, "seconds_per_image",
    "AP_minus_float32"}, from the weights file `weights`, every runtime on `threads` threads;
    the export, quantized graphs and evaluator output go into `workdir`.
    """
    from retina_plugin.config import load_config
    from retina_plugin.inference.calibration import calibration_dataset, calibration_loader
    from retina_plugin.inference.evaluation import evaluate
    from retina_plugin.deploy.export import export_model
    from retina_plugin.inference.int8 import calibrate_int8, quantize_int8
    from retina_plugin.inference.model import load_model
    from retina_plugin.data.catalog import register_config_datasets

    torch.set_num_threads(threads)
    w = Path(workdir)
    cfg = load_config(str(CONFIG), ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(w)])
    register_config_datasets(cfg)
    model = load_model(cfg)

    name = calibration_dataset(cfg)
    loader, count = calibration_loader(cfg, name, CALIBRATION_IMAGES)
    batches = list(loader)
    images = [inputs["image"].float().numpy() for batch in batches for inputs in batch]
    traced_size = images[0].shape[-2:]
    if any(image.shape[-2:] != traced_size for image in images):
        raise ValueError(f"the calibration images of {name} differ in size after the test resize; the export takes one")
    log(f"calibration: {count} images of {name}, {traced_size[0]}x{traced_size[1]}")

    def row(path, precision, detector):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' printout
            result = evaluate(cfg, detector, TEST_DATASET)
        log(f"{path} {precision}: AP {result['AP']:.2f} ({time.perf_counter() - start:.0f} s)")
        return {"path": path, "precision": precision, **result}

    rows = [row("ours", "float32", model)]
    int8_model = quantize_int8(copy.deepcopy(model), calibrate_int8(model, batches), source=f"{count} images of {name}")
    rows.append(row("ours", "int8", int8_model))

    start = time.perf_counter()
    detector = export_model(model, torch.from_numpy(images[0]), str(w / "export"), "onnx")
    runtimes.extract_network(detector, w / "network.onnx")
    log(f"exported the network to ONNX ({time.perf_counter() - start:.0f} s)")
    for runtime_row, (quantize, int8_file) in RUNTIME_QUANTIZERS.items():
        path, precision = runtimes.ROWS[runtime_row]
        start = time.perf_counter()
        quantize(w / "network.onnx", w / int8_file, images)
        log(f"{path}: quantized ({time.perf_counter() - start:.0f} s)")
        network = runtimes.RUNNERS[runtime_row](runtime_row, w, threads)  # loads int8_file from w
        rows.append(row(path, precision, NetworkDetector(model, network, traced_size)))

    for r in rows:
        r["AP_minus_float32"] = r["AP"] - rows[0]["AP"]
    return rows


def table_lines(rows):
    """The markdown table of `int8_ap_rows`' rows."""
    lines = ["| path | precision | AP | AP50 | AP75 | AP - float32 AP |", "|---|---|---|---|---|---|"]
    for r in rows:
        delta = "reference" if r is rows[0] else f"{r['AP_minus_float32']:+.2f}"
        lines.append(f"| {r['path']} | {r['precision']} | " + " | ".join(f"{r[k]:.2f}" for k in TABLE_KEYS) + f" | {delta} |")
    return lines


def markdown(summary):
    """The table and its notes."""
    lines = table_lines(summary["rows"])
    lines += [
        "",
        f"- **Model:** `{summary['weights']}` ({CONFIG.relative_to(ROOT)}), evaluated on {TEST_DATASET} "
        "by COCOEvaluator, as `train_net.py --eval-only`; every row's AP difference is to ours float32.",
        f"- **Calibration:** every int8 path on the {CALIBRATION_IMAGES} shapes_train images `tools/calibrate_int8.py` "
        "uses by default; the runtimes' network is the project's ONNX export cut at the head's outputs, "
        "with ours' float postprocess after it.",
        f"- **Run:** {summary['threads']} thread(s); torch {torch.__version__}, {runtimes.library_versions()}; "
        f"{summary['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="the trained shapes_R18_cpu weights")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and every runtime")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if not Path(args.weights).is_file():
        sys.exit(f"int8_ap.py: weights not found: {args.weights} (`make run` trains them)")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        rows = int8_ap_rows(args.weights, args.threads, workdir, lambda s: print(s, flush=True))
    summary = {
        "weights": os.path.relpath(args.weights, ROOT), "threads": args.threads, "rows": rows,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    table = markdown(summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_ap.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "int8_ap.md").write_text(table)
    print()
    print(table)
    print(f"wrote {out / 'int8_ap'}.json and .md")


if __name__ == "__main__":
    main()
