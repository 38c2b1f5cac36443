"""
The rows of int8_ap.py's table (runtimes.py adds them below its own): the COCO box AP on the
embedded shapes_val split of `make run`'s trained ResNet-18-FPN (configs/shapes_R18_cpu.yaml)
in float32 and in the three int8 paths (ours, ONNX Runtime, OpenVINO); int8_ap.py's docstring
says how each is made and evaluated.
"""
import contextlib
import copy
import io
import time
from pathlib import Path

import torch

from harness import ROOT
from runners import ROWS, RUNNERS
from runtime_export import extract_network, quantize_onnxruntime, quantize_openvino

CONFIG = ROOT / "configs" / "shapes_R18_cpu.yaml"
DEFAULT_WEIGHTS = ROOT / "output" / "shapes_R18_cpu" / "model_final.pth"
TEST_DATASET = "shapes_val"
CALIBRATION_IMAGES = 32  # tools/calibrate_int8.py's default --num-images
TABLE_KEYS = ("AP", "AP50", "AP75")
# The runtimes' int8 rows: their quantizer and the file their runner loads.
RUNTIME_QUANTIZERS = {
    "onnxruntime_int8": (quantize_onnxruntime, "network_int8.onnx"),
    "openvino_int8": (quantize_openvino, "network_int8.xml"),
}


class NetworkDetector:
    """
    A model for inference_on_dataset: a runtime's network (runners.OnnxRuntime or
    runners.OpenVino) gives the head outputs of each image, ours' float postprocess the
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
    extract_network(detector, w / "network.onnx")
    log(f"exported the network to ONNX ({time.perf_counter() - start:.0f} s)")
    for runtime_row, (quantize, int8_file) in RUNTIME_QUANTIZERS.items():
        path, precision = ROWS[runtime_row]
        start = time.perf_counter()
        quantize(w / "network.onnx", w / int8_file, images)
        log(f"{path}: quantized ({time.perf_counter() - start:.0f} s)")
        network = RUNNERS[runtime_row](runtime_row, w, threads)  # loads int8_file from w
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
