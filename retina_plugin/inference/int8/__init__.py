"""
Int8 inference on the CPU: post-training static quantization of the backbone and head.

Weights are int8, symmetric, one scale per output channel; activations are uint8 with one
scale and zero point per tensor, from ranges recorded on calibration images. The convolutions
are oneDNN's int8 kernels (VNNI on x86), with ReLU and the ResNet's residual sum and the FPN's
top-down sum fused into them; activations stay uint8 from the stem through the FPN to the
outputs that only the head reads (P3-P5), and inside the head's subnets. P6/P7 and the head's
outputs are float32, and decoding and NMS are those of the float32 model.

    ranges = calibrate_int8(model, batches)          # float32 model, eval mode, weights loaded
    save_int8_calibration("int8_calibration.json", ranges)
    quantize_int8(model, load_int8_calibration("int8_calibration.json"))   # in place

One concept a file: `activations` (uint8 tensors and their scales), `layers` (the int8
convolution, blocks and FPN), `observe` (recording the ranges), `calibration_file` (the ranges
on disk), `convert` (a float model made int8), `calibrate` (weights + images -> the file, what
tools/calibrate_int8.py runs). `MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8` with
`INT8_CALIBRATION <file>` is applied by `retina_plugin.inference.model.load_model` on every path.
"""
from .activations import Int8Error, QParams, QuantizedActivation, Ranges, activation_qparams, quantize_activation
from .calibration_file import CALIBRATION_FORMAT, load_int8_calibration, save_int8_calibration, weights_fingerprint
from .convert import quantize_int8
from .layers import Int8Conv2d
from .observe import calibrate_int8

__all__ = [
    "Int8Error",
    "QParams",
    "QuantizedActivation",
    "Ranges",
    "activation_qparams",
    "quantize_activation",
    "CALIBRATION_FORMAT",
    "load_int8_calibration",
    "save_int8_calibration",
    "weights_fingerprint",
    "quantize_int8",
    "Int8Conv2d",
    "calibrate_int8",
]
