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
made by runtimes.py's functions (runtime_export.py): the project's ONNX export of the float
model (retina_plugin.deploy.export), traced on the first calibration image, cut at the head's
outputs (image -> normalization, padding, backbone, head -> per-level logits and deltas),
quantized with runtimes.py's settings (ONNX Runtime: quant_pre_process, then QDQ, int8
weights per channel, uint8 activations; OpenVINO: nncf's default preset). Their head outputs
go through ours' float postprocess (decoding, NMS, rescaling to the original image size as
Detectron2's detector_postprocess). The shapes images are 256x256 and the test resize keeps
them so: every image is checked to have the traced size.

All four are evaluated by the evaluator and loader `train_net.py --eval-only` uses
(retina_plugin.inference.evaluation: COCOEvaluator), through
retina_plugin.inference.evaluation.evaluate. It writes int8_ap.json and int8_ap.md to --out.
The rows are int8_ap_rows.py's; this file is the command line and the notes below the table.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import ROOT, library_versions, write_results
from int8_ap_rows import CALIBRATION_IMAGES, CONFIG, DEFAULT_WEIGHTS, TEST_DATASET, int8_ap_rows, table_lines


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
        f"- **Run:** {summary['threads']} thread(s); torch {torch.__version__}, {library_versions()}; "
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
    write_results(args.out, "int8_ap", summary, markdown(summary))


if __name__ == "__main__":
    main()
