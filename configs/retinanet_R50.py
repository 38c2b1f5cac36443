# RetinaNet R50-FPN 1x on COCO: the LazyConfig form of configs/retinanet_R50.yaml.
#   python tools/lazyconfig_train_net.py --config-file configs/retinanet_R50.py --num-gpus 8
from .common.retinanet_plugin import dataloader, inference, lr_multiplier, model, optimizer, train  # noqa: F401 (the config)

model.backbone.bottom_up.module.stages.depth = 50
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.output_dir = "./output/retinanet_R50"
