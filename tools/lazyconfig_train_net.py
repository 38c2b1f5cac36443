#!/usr/bin/env python
"""
Train or evaluate with Detectron2's LazyConfig (Python) configs, as Detectron2's
tools/lazyconfig_train_net.py does; the logic is in retina_plugin.engine.lazy.

    python tools/lazyconfig_train_net.py --config-file configs/shapes_R18_cpu.py
    python tools/lazyconfig_train_net.py --config-file configs/shapes_R18_cpu.py --num-gpus 2 train.max_iter=100
    python tools/lazyconfig_train_net.py --config-file configs/retinanet_R50.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file configs/retinanet_R50.py --eval-only \
        train.init_checkpoint=model.pth train.device=cpu

Overrides are KEY=VALUE (e.g. train.max_iter=100, dataloader.train.total_batch_size=4); a bad
config file or override ends with one line `lazyconfig_train_net: error: ...` and status 2.
"""
from detectron2.engine import launch

import retina_plugin  # noqa: F401  (registers the components)
from retina_plugin.engine.lazy import argument_parser, check_args, main

if __name__ == "__main__":
    args = argument_parser().parse_args()
    check_args(args)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
