#!/usr/bin/env python
"""
Convert RetinaNet weights: torchvision (v1, v2) and DeepForest into RetinaNetPlugin (a checkpoint
with the class names + its config), and back (retina_plugin.cli.convert_weights; docs/weights.md).

    python tools/convert_weights.py --from deepforest --input deepforest-tree/ --output out/
    python tools/demo.py --config-file out/config.yaml --input image.png --output vis/
    python tools/convert_weights.py --to deepforest --config-file out/config.yaml \
        --input out/model_final.pth --output deepforest-tree-finetuned/
"""
from retina_plugin.cli.convert_weights import main

if __name__ == "__main__":
    main()
