#!/usr/bin/env python
"""
Export RetinaNetPlugin to TorchScript or ONNX, like Detectron2's tools/deploy/export_model.py.

    python tools/export_model.py --config-file configs/shapes_R18_cpu.yaml --format torchscript \
        --export-method tracing --output export/ --opts MODEL.WEIGHTS output/shapes_R18_cpu/model_final.pth
    python tools/export_model.py --config-file configs/retinanet_R50.yaml --format onnx \
        --output export/ --sample-image img.jpg --check --opts MODEL.WEIGHTS model_final.pth

Writes export/model.ts or export/model.onnx: one (C, H, W) float32 image in, C =
len(MODEL.PIXEL_MEAN) channels; boxes (R, 4), scores (R,), classes (R,) out (see
retina_plugin/deploy/export.py). The model is traced on --sample-image, resized as
DefaultPredictor resizes, or on a generated image of the test size (and channel count).
--check runs the exported and the eager model on that image and compares their detections as
sets (class, IoU, score; near-tied scores may swap places).

(retina_plugin.cli.export_model)
"""
import warnings

# Detectron2 and torch warn on import that torch.jit is deprecated; it is what this export uses.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

from retina_plugin.cli.export_model import main  # noqa: E402

if __name__ == "__main__":
    main()
