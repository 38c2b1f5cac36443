"""
Deployment: TorchScript / ONNX export by tracing (`export`) and int8 inference on the CPU
(`quantization`).
"""
