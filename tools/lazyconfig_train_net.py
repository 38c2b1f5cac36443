#!/usr/bin/env python
"""
Train or evaluate with Detectron2's LazyConfig (Python) configs, as Detectron2's
tools/lazyconfig_train_net.py does (retina_plugin.cli.lazyconfig_train_net).

    python tools/lazyconfig_train_net.py --config-file configs/shapes_R18_cpu.py
    python tools/lazyconfig_train_net.py --config-file configs/shapes_R18_cpu.py --num-gpus 2 train.max_iter=100
    python tools/lazyconfig_train_net.py --config-file configs/retinanet_R50.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file configs/retinanet_R50.py --eval-only \
        train.init_checkpoint=model.pth train.device=cpu

Overrides are KEY=VALUE (e.g. train.max_iter=100, dataloader.train.total_batch_size=4); a bad
config file or override ends with one line `lazyconfig_train_net: error: ...` and status 2.
"""
from retina_plugin.cli.lazyconfig_train_net import run

if __name__ == "__main__":
    run()
