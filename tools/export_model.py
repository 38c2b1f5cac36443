#!/usr/bin/env python
"""
Export RetinaNetPlugin to TorchScript or ONNX, like Detectron2's tools/deploy/export_model.py.
The command line and its logic: retina_plugin.cli.export_model (`--help`).
"""
import warnings

# Detectron2 and torch warn on import that torch.jit is deprecated; it is what this export uses.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

from retina_plugin.cli.export_model import main  # noqa: E402

if __name__ == "__main__":
    main()
