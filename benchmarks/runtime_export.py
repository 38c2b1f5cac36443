"""
The files runners.py's rows load, made once per run (runtimes.py's driver, int8_profile.py):
ours' weights; the whole detector exported to ONNX with the project's export
(retina_plugin.deploy.export, as `tools/export_model.py --format onnx`), traced on the timed
image; from it the graph of the network alone (image -> normalization, padding, backbone, head
-> per-level logits and deltas), cut at the head's outputs with onnx.utils.extract_model; and
that network quantized by onnxruntime's `quantize_static` and by `nncf.quantize` (OpenVINO).
int8_ap_rows.py quantizes its own network with the same two functions.
"""
import os
import time
from pathlib import Path

from runners import WEIGHTS_FILE, calibration_images, timed_image


def prepare(workdir, log):
    """Write weights.pth, detector.onnx, network.onnx, network_int8.onnx, network_int8.xml into workdir."""
    import torch

    from models import build_ours
    from retina_plugin.deploy.export import export_model

    w = Path(workdir)
    model = build_ours("cpu")
    torch.save({"model": model.state_dict()}, w / WEIGHTS_FILE)
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
