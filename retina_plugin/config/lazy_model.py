"""
A Detectron2 LazyConfig RetinaNet switched to the plugin in one line, the LazyConfig counterpart
of `MODEL.META_ARCHITECTURE: RetinaNetPlugin`:

    from retina_plugin.config.lazy_model import as_retinanet_plugin

    model = as_retinanet_plugin(model)  # e.g. the model of COCO-Detection/retinanet_R_50_FPN_1x.py

`as_retinanet_plugin` takes the `model` node of Detectron2's RetinaNet (`L(RetinaNet)(...)`, as
Detectron2's `common/models/retinanet.py` builds it) and returns `L(RetinaNetPlugin)(...)` with
every setting carried over, each where the plugin keeps it:

    backbone, anchor_generator, anchor_matcher, num_classes,     the same nodes and values, under the same names
    head_in_features, pixel_mean, pixel_std, input_format,
    vis_period
    head (RetinaNetHead: input_shape, conv_dims, num_anchors,    head (FocalLossHead: in_channels, num_levels,
    num_classes, norm, prior_prob)                                num_convs, num_anchors, num_classes, norm, prior_prob)
    focal_loss_alpha, focal_loss_gamma, smooth_l1_beta,          head.<the same names>
    box_reg_loss_type, box2box_transform
    test_score_thresh, test_topk_candidates, test_nms_thresh,    postprocess (DecodeAndNMS): score_thresh, topk_candidates,
    max_detections_per_image                                     nms_thresh, detections_per_image; its box2box_transform
                                                                 follows head.box2box_transform

A setting the node leaves out gets Detectron2's default (e.g. smooth_l1_beta 0.0, not the
plugin's configs' 0.11). The plugin's own settings (loss normaliser, channels_last, Winograd,
inference dtype, compile) get the defaults of `MODEL.RETINA_PLUGIN`, as the YAML switch does. A
setting the plugin cannot express (another head or meta-architecture, subnet convs of other
widths than their input, an argument this module does not know) raises ConfigError naming it.
"""
import copy
import inspect

from detectron2.config import LazyCall as L
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.utils.registry import locate
from omegaconf import DictConfig, OmegaConf

from ..modeling.head import FocalLossHead
from ..modeling.meta_arch import RetinaNetPlugin
from ..modeling.postprocess import DecodeAndNMS
from .loading import ConfigError, get_retina_plugin_cfg

__all__ = ["as_retinanet_plugin"]

# RetinaNet's arguments: kept as they are, moved into the head, or moved into the postprocess.
_KEPT = ("backbone", "anchor_generator", "anchor_matcher", "num_classes", "head_in_features",
         "pixel_mean", "pixel_std", "input_format", "vis_period")  # fmt: skip
_TO_HEAD = ("focal_loss_alpha", "focal_loss_gamma", "smooth_l1_beta", "box_reg_loss_type", "box2box_transform")
_TO_POSTPROCESS = {
    "test_score_thresh": "score_thresh",
    "test_topk_candidates": "topk_candidates",
    "test_nms_thresh": "nms_thresh",
    "max_detections_per_image": "detections_per_image",
}
_HEAD_KEYS = ("input_shape", "num_classes", "num_anchors", "conv_dims", "norm", "prior_prob")


def as_retinanet_plugin(model: DictConfig) -> DictConfig:
    """
    The LazyConfig node `L(RetinaNetPlugin)(...)` with every setting of `model`, Detectron2's
    `L(RetinaNet)(...)` node (left unchanged); ConfigError naming a setting the plugin cannot express.
    """
    _check_target(model, "model", RetinaNet)
    settings = _with_defaults(model, "model", RetinaNet, _KEPT + _TO_HEAD + tuple(_TO_POSTPROCESS) + ("head",))
    _check_target(settings["head"], "model.head", RetinaNetHead)
    head = _with_defaults(settings["head"], "model.head", RetinaNetHead, _HEAD_KEYS)
    plugin = get_retina_plugin_cfg().MODEL.RETINA_PLUGIN
    box2box = settings["box2box_transform"]
    if isinstance(box2box, DictConfig):  # the head's transform, also after an override of model.head.box2box_transform.*
        box2box = L(box2box._target_)(**{key: f"${{...head.box2box_transform.{key}}}" for key in box2box if key != "_target_"})
    return L(RetinaNetPlugin)(
        **{key: settings[key] for key in _KEPT},
        head=L(FocalLossHead)(
            **_subnets(head),
            num_anchors=head["num_anchors"],
            num_classes=head["num_classes"],
            norm=head["norm"],
            prior_prob=head["prior_prob"],
            **{key: settings[key] for key in _TO_HEAD},
        ),
        postprocess=L(DecodeAndNMS)(
            box2box_transform=box2box,
            **{ours: settings[theirs] for theirs, ours in _TO_POSTPROCESS.items()},
        ),
        loss_normalizer_momentum=plugin.LOSS_NORMALIZER_MOMENTUM,
        loss_normalizer_init=plugin.LOSS_NORMALIZER_INIT,
        channels_last=plugin.CHANNELS_LAST,
        inference_dtype=plugin.INFERENCE_DTYPE,
        compile_inference=plugin.COMPILE,
        winograd=plugin.WINOGRAD,
    )


def _check_target(node, path: str, expected: type) -> None:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if isinstance(target, str):
        target = locate(target)
    if target is not expected:
        name = getattr(target, "__qualname__", repr(target))
        raise ConfigError(
            f"{path} is {name}, not Detectron2's {expected.__qualname__}: as_retinanet_plugin converts "
            f"Detectron2's RetinaNet with its RetinaNetHead only"
        )


def _with_defaults(node: DictConfig, path: str, target: type, known) -> dict:
    """The arguments `node` gives `target` (interpolations kept as written), completed by its signature's defaults."""
    params = inspect.signature(target.__init__).parameters
    unknown = sorted(set(node.keys()) - {"_target_"} - set(known))
    if unknown:
        raise ConfigError(
            f"{path}.{unknown[0]} = {OmegaConf.select(node, unknown[0])!r}: RetinaNetPlugin has no counterpart "
            f"of this {target.__qualname__} argument"
        )
    not_carried = sorted(set(params) - {"self"} - set(known))
    if not_carried:  # a Detectron2 version with an argument this module does not carry over
        raise ConfigError(f"{path}: {target.__qualname__} takes {not_carried[0]!r}, which RetinaNetPlugin cannot express")
    node = copy.deepcopy(node)
    settings = {}
    for key in known:
        if key in node:
            value = node._get_node(key)
            settings[key] = value if OmegaConf.is_config(value) else value._value()
        elif params[key].default is not inspect.Parameter.empty:
            settings[key] = params[key].default
        else:
            raise ConfigError(f"{path} has no {key}, which {target.__qualname__} needs")
    return settings


def _subnets(head: dict) -> dict:
    """FocalLossHead's in_channels, num_levels and num_convs from RetinaNetHead's input_shape and conv_dims."""
    channels = {shape.channels for shape in head["input_shape"]}
    if len(channels) != 1:
        raise ConfigError(f"model.head.input_shape has levels of {sorted(channels)} channels: the head's subnets are shared by all levels")
    in_channels = channels.pop()
    conv_dims = list(head["conv_dims"])
    if any(dim != in_channels for dim in conv_dims):
        raise ConfigError(
            f"model.head.conv_dims = {conv_dims}: FocalLossHead's subnet convs keep the input's {in_channels} "
            "channels (the paper's head; Detectron2's RetinaNet YAML keys give the same)"
        )
    return {"in_channels": in_channels, "num_levels": len(head["input_shape"]), "num_convs": len(conv_dims)}
