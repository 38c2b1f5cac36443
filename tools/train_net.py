#!/usr/bin/env python
"""
Train or evaluate RetinaNetPlugin with Detectron2's DefaultTrainer and COCOEvaluator.

    python tools/train_net.py --config-file configs/retinanet_R101.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/retinanet_R50.yaml --eval-only MODEL.WEIGHTS model.pth
    python tools/train_net.py --config-file configs/shapes_R18_cpu.yaml MODEL.DEVICE cpu
    python tools/train_net.py --config-file configs/retinanet_R50.yaml \
        --train-json ann/train.json --train-images img/train --test-json ann/val.json --test-images img/val
"""
import retina_plugin  # noqa: F401  (registers the components)
from retina_plugin.engine import argument_parser, launch_main

if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch_main(args)
