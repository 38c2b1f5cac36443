# The embedded CPU run as a LazyConfig, the counterpart of configs/shapes_R18_cpu.yaml:
# RetinaNetPlugin, ResNet-18-FPN (128 channels) trained from scratch on the generated "shapes"
# dataset (3 classes, 256x256 images, written on first use), GN head with 2 convs.
#   python tools/lazyconfig_train_net.py --config-file configs/shapes_R18_cpu.py
# From random init the backbone needs a trainable norm (FrozenBN goes NaN) and freeze_at 0.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from fvcore.common.param_scheduler import MultiStepParamScheduler
from detectron2.solver import WarmupParamScheduler
from omegaconf import OmegaConf

from retina_plugin.evaluation import FastCOCOEvaluator

from .common.retinanet_plugin import inference, model, optimizer, train  # noqa: F401 (inference: the config's)

bottom_up = model.backbone.bottom_up.module
bottom_up.freeze_at = 0
bottom_up.stem.norm = "BN"
bottom_up.stages.depth = 18
bottom_up.stages.norm = "BN"
del bottom_up.stages.stride_in_1x1  # BasicBlock (ResNet-18/34) has no such option
del bottom_up
model.backbone.out_channels = 128
model.backbone.top_block.in_channels = 512  # res5 of ResNet-18
model.pixel_std = [57.375, 57.120, 58.395]
model.num_classes = 3
model.head.norm = "GN"
model.head.num_convs = 2
# Base sizes 16..256 (a level lower than COCO: the shapes are small), times the octave scales.
model.anchor_generator.sizes = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [16, 32, 64, 128, 256]]

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(256,), max_size=256, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
    ),
    total_batch_size=8,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=256, max_size=256)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=1,
)
dataloader.evaluator = L(FastCOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)

optimizer.lr = 0.01
# lr x 1, 0.1, 0.01 at 380, 460 of 500 iterations (scale-invariant: a fraction of train.max_iter);
# linear warmup over the first 100 from factor 0.001.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[380, 460, 500]),
    warmup_length=100 / 500,
    warmup_method="linear",
    warmup_factor=0.001,
)

train.max_iter = 500
train.checkpointer.period = 100
train.device = "cpu"
train.output_dir = "./output/shapes_R18_cpu"
