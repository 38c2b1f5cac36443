"""
Shared LazyConfig pieces of the plugin's Python configs, the counterpart of
configs/Base-RetinaNetPlugin.yaml: RetinaNetPlugin on ResNet-50-FPN (P3-P7) for COCO, with
Detectron2's common optimizer (SGD), 1x schedule, COCO data loaders and training options, at the
paper's values (LR 0.01, batch 16, 90k iterations with steps at 60k/80k, smooth-L1 beta 1/9).

    from .common.retinanet_plugin import dataloader, lr_multiplier, model, optimizer, train

Every value equals what the YAML configs build (tests/engine/test_lazy.py checks it). The ResNet is
wrapped in `fold_frozen_batchnorm` as the YAML backbone builder does, so its options are under
`model.backbone.bottom_up.module` (e.g. `.freeze_at`, `.stages.depth`, `.stages.norm`).
"""
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher

from retina_plugin import DecodeAndNMS, FocalLossHead, RetinaAnchorGenerator, RetinaNetPlugin
from retina_plugin.evaluation import FastCOCOEvaluator
from retina_plugin.inference.model import InferenceSettings
from retina_plugin.modeling.backbone import fold_frozen_batchnorm

_constants = model_zoo.get_config("common/data/constants.py").constants

# ---- The model: MODEL.* of Base-RetinaNetPlugin.yaml over Detectron2's defaults. ----
model = L(RetinaNetPlugin)(
    # build_retina_plugin_resnet_fpn_backbone: ResNet (FrozenBN folded into the convolutions at
    # inference) -> FPN on res3-res5 -> P6 (3x3/2 conv on C5, MODEL.RETINA_PLUGIN.P6_SOURCE "res5"), P7.
    backbone=L(FPN)(
        bottom_up=L(fold_frozen_batchnorm)(
            module=L(ResNet)(
                stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
                stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
                out_features=["res3", "res4", "res5"],
                freeze_at=2,  # MODEL.BACKBONE.FREEZE_AT
            ),
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        norm="",
        # in_channels: the channels of res5 (2048 for ResNet-50/101, 512 for ResNet-18/34);
        # in_feature="p5" takes P6 from P5 instead (in_channels = out_channels).
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}", in_feature="res5"),
        fuse_type="sum",
    ),
    head=L(FocalLossHead)(
        in_channels="${..backbone.out_channels}",
        num_levels=5,  # len(head_in_features)
        num_anchors=9,  # sizes per level x aspect ratios
        num_classes="${..num_classes}",
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        num_convs=4,
        norm="",
        prior_prob=0.01,
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
        box_reg_loss_type="smooth_l1",
        # The paper's smooth L1 (beta = 1/9, sigma = 3); Detectron2's RetinaNet uses 0.0 (L1).
        smooth_l1_beta=0.11,
    ),
    postprocess=L(DecodeAndNMS)(
        box2box_transform=L(Box2BoxTransform)(weights="${...head.box2box_transform.weights}"),
        score_thresh=0.05,
        topk_candidates=1000,
        nms_thresh=0.5,
        detections_per_image=100,  # TEST.DETECTIONS_PER_IMAGE
    ),
    # Per level P3..P7: base size 32..512 times the octave scales 2^0, 2^(1/3), 2^(2/3) (paper section 4).
    anchor_generator=L(RetinaAnchorGenerator)(
        sizes=[[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]],
        aspect_ratios=[[0.5, 1.0, 2.0]],
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    anchor_matcher=L(Matcher)(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
    num_classes=80,
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    pixel_mean=_constants.imagenet_bgr256_mean,
    pixel_std=_constants.imagenet_bgr256_std,
    loss_normalizer_momentum=0.9,
    loss_normalizer_init=100.0,
    input_format="BGR",
    channels_last=True,  # MODEL.RETINA_PLUGIN.CHANNELS_LAST
    inference_dtype="float32",
    winograd="auto",  # MODEL.RETINA_PLUGIN.WINOGRAD: measured per convolution shape on this machine
    vis_period=0,
)

# ---- COCO training: DATASETS, INPUT, SOLVER and TEST of Base-RetinaNetPlugin.yaml. ----
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
# INPUT.MIN_SIZE_TRAIN (800,), MAX_SIZE_TRAIN 1333 (Detectron2's common config samples 640..800).
dataloader.train.mapper.augmentations[0].short_edge_length = (800,)
dataloader.train.total_batch_size = 16  # 8 GPUs x 2 images
# FastCOCOEvaluator (COCOEvaluator running faster-coco-eval's COCOeval), as tools/train_net.py's;
# it writes its detections under the run's folder, as tools/train_net.py does.
dataloader.evaluator._target_ = FastCOCOEvaluator
dataloader.evaluator.output_dir = "${...train.output_dir}/inference"

optimizer = model_zoo.get_config("common/optim.py").SGD
optimizer.lr = 0.01
# lr x 1, 0.1, 0.01 at 60k, 80k of 90k iterations; linear warmup over 1000 from factor 0.001.
lr_multiplier = model_zoo.get_config("common/coco_schedule.py").lr_multiplier_1x

train = model_zoo.get_config("common/train.py").train
train.max_iter = 90000
train.checkpointer.period = 5000
train.eval_period = 0  # evaluate once, after training (TEST.EVAL_PERIOD 0)
train.log_period = 20
train.init_checkpoint = ""
train.output_dir = "./output"
train.seed = -1  # SEED: < 0 draws one; >= 0 seeds rank r with seed + r (read by default_setup)
train.cudnn_benchmark = False  # CUDNN_BENCHMARK

# ---- Inference: MODEL.RETINA_PLUGIN's INT8_CALIBRATION, TILE_*, TTA_MERGE and TEST.AUG.* of the YAML configs. ----
# Read wherever the model is made ready for use (retina_plugin.inference.model.load_lazy_model and the
# evaluation of tools/lazyconfig_train_net.py); int8 also needs model.inference_dtype = "int8".
inference = L(InferenceSettings)(
    int8_calibration="",
    tile_size=0,
    tile_overlap=0.2,
    tile_batch=4,
    tiled_detections_per_image=0,
    tile_resize=[],  # TILE_RESIZE: [] native resolution, or [min_size, max_size] as torchvision resizes
    tile_merge="edges",  # TILE_MERGE: "edges" or "deepforest"
    tile_nms_thresh=0.0,  # TILE_NMS_THRESH: 0.0 = the model's NMS threshold
    tta=False,
    tta_min_sizes=[400, 500, 600, 700, 800, 900, 1000, 1100, 1200],
    tta_max_size=4000,
    tta_flip=True,
    tta_merge="nms",
)
