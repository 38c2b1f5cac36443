# RetinaNet R101-FPN 1x on COCO: the LazyConfig form of configs/retinanet_R101.yaml.
#   python tools/lazyconfig_train_net.py --config-file configs/retinanet_R101.py --num-gpus 8
from .common.retinanet_plugin import dataloader, inference, lr_multiplier, model, optimizer, train  # noqa: F401 (the config)

model.backbone.bottom_up.module.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "./output/retinanet_R101"
