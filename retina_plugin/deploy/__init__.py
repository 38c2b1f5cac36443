"""
Deployment: TorchScript / ONNX export by tracing (`export`; the network alone, `network_export`), the
image it is traced on (`sample_image`), and the exported file run and checked (`exported`).
"""
