# Detectron2's zoo LazyConfig COCO-Detection/retinanet_R_50_FPN_1x.py switched to the plugin by
# the one-liner of docs/lazyconfig.md, then sized for a CPU test run (random init: nothing
# downloaded). `_zoo` starts with "_", so LazyConfig.load leaves it out of the config.
from detectron2 import model_zoo

from retina_plugin.config.lazy_model import as_retinanet_plugin

_zoo = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.py")
dataloader, optimizer, lr_multiplier, train = _zoo.dataloader, _zoo.optimizer, _zoo.lr_multiplier, _zoo.train

model = as_retinanet_plugin(_zoo.model)

train.init_checkpoint = ""
train.device = "cpu"
optimizer.lr = 0.001
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.train.mapper.augmentations[0].short_edge_length = (128,)
dataloader.train.mapper.augmentations[0].max_size = 128
dataloader.test.num_workers = 0
dataloader.test.mapper.augmentations[0].short_edge_length = 128
dataloader.test.mapper.augmentations[0].max_size = 128
