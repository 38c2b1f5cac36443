#!/usr/bin/env python
"""
Train or evaluate RetinaNetPlugin with Detectron2's DefaultTrainer and COCOEvaluator
(retina_plugin.cli.train_net).

    python tools/train_net.py --config-file configs/retinanet_R101.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/retinanet_R50.yaml --eval-only MODEL.WEIGHTS model.pth
    python tools/train_net.py --config-file configs/shapes_R18_cpu.yaml MODEL.DEVICE cpu
    python tools/train_net.py --config-file configs/retinanet_R50.yaml \
        --train-json ann/train.json --train-images img/train --test-json ann/val.json --test-images img/val
"""
from retina_plugin.cli.train_net import run

if __name__ == "__main__":
    run()
