"""Deployment: TorchScript / ONNX export by tracing (`export`)."""
