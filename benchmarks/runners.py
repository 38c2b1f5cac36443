"""
The rows that time RetinaNetPlugin R50-FPN (bench.py's weights) against the runtimes CPU users
deploy it with, and a runner per row: it loads that row's model from the files
runtime_export.prepare writes and runs the two parts runtimes.py times on one (3, H, W) float32
BGR image (numpy): `network` (image -> head outputs, per-level logits then deltas) and, where
the row has it, `detector` (image -> boxes, scores, classes). runtimes.py, int8_profile.py and
int8_ap_rows.py run them.
"""
import time
from pathlib import Path

from inputs import INFER_SIZE, bgr_tensor, inference_sample, synthetic_image
from tasks import INT8_CALIBRATION_SEEDS

# row: (runtime, precision); float32 rows before int8 ones, ours first in each.
ROWS = {
    "ours": ("ours", "float32"),
    "ours_static": ("ours, WINOGRAD True (static rules)", "float32"),
    "ours_direct": ("ours, WINOGRAD False", "float32"),
    "ours_compiled": ("ours, torch.compile", "float32"),
    "onnxruntime": ("ONNX Runtime", "float32"),
    "openvino": ("OpenVINO", "float32"),
    "ours_int8": ("ours", "int8"),
    "onnxruntime_int8": ("ONNX Runtime", "int8"),
    "openvino_int8": ("OpenVINO", "int8"),
}
FLOAT32_OF = {"ours_int8": "ours", "onnxruntime_int8": "onnxruntime", "openvino_int8": "openvino"}
WARMUP, CALLS = 1, 2  # untimed and timed calls of each part in a runtimes.py worker
WEIGHTS_FILE = "weights.pth"  # ours' weights, as a checkpoint RetinaCheckpointer reads


def timed_image():
    """The timed image as the exported model takes it: (3, H, W) float32 BGR 0..255, numpy."""
    return bgr_tensor(inference_sample(), "cpu").numpy()


def calibration_images():
    return [bgr_tensor(synthetic_image(*INFER_SIZE, seed=s)[0], "cpu").numpy() for s in INT8_CALIBRATION_SEEDS]


class Ours:
    parts = ("network", "detector")

    def __init__(self, row, workdir, threads):
        import torch

        from models import calibrated_int8, ours_config
        from retina_plugin.inference.model import load_model

        torch.set_num_threads(threads)
        opts = {"ours_static": ["MODEL.RETINA_PLUGIN.WINOGRAD", True], "ours_direct": ["MODEL.RETINA_PLUGIN.WINOGRAD", False]}.get(row, [])
        model = load_model(ours_config("cpu", opts), str(Path(workdir) / WEIGHTS_FILE))
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
    """OpenVINO's CPU settings for every OpenVINO row (and int8_profile.py)."""
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


RUNNERS = {"ours": Ours, "ours_static": Ours, "ours_direct": Ours, "ours_compiled": Ours, "ours_int8": Ours, "onnxruntime": OnnxRuntime,
           "onnxruntime_int8": OnnxRuntime, "openvino": OpenVino, "openvino_int8": OpenVino}  # fmt: skip
