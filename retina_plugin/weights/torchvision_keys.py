"""
The state_dict names of torchvision's RetinaNet (`retinanet_resnet50_fpn`, `_v2`, DeepForest's
`RetinaNetHub`) and of RetinaNetPlugin (Detectron2's `RetinaNet` names), both ways, and the
order of the anchors in the predictors' output channels.
"""
import re
from typing import Callable, Dict, List, Tuple

import torch

from ..errors import UserError

# BatchNorm2d / FrozenBatchNorm2d tensors (num_batches_tracked: BatchNorm2d only, not used at inference).
_NORM = r"(?P<p>weight|bias|running_mean|running_var)"
_PARAM = r"(?P<p>weight|bias)"
_HEADS = {"classification_head": "cls_subnet", "regression_head": "bbox_subnet"}
_PREDICTORS = {"classification_head.cls_logits": "cls_score", "regression_head.bbox_reg": "bbox_pred"}


class WeightsFormatError(UserError):
    """A weights file is not the format it was named as; the message names the file and the first wrong key."""


def _torchvision_rules(subnet_step: int) -> List[Tuple[str, Callable]]:
    """(torchvision name pattern, plugin name of a match); `subnet_step` = layers per subnet conv (2, or 3 with a norm)."""
    return [
        (r"backbone\.body\.conv1\.weight", lambda m: "backbone.bottom_up.stem.conv1.weight"),
        (rf"backbone\.body\.bn1\.{_NORM}", lambda m: f"backbone.bottom_up.stem.conv1.norm.{m['p']}"),
        (
            r"backbone\.body\.layer(?P<l>[1-4])\.(?P<b>\d+)\.conv(?P<j>[1-3])\.weight",
            lambda m: f"backbone.bottom_up.res{int(m['l']) + 1}.{m['b']}.conv{m['j']}.weight",
        ),
        (
            rf"backbone\.body\.layer(?P<l>[1-4])\.(?P<b>\d+)\.bn(?P<j>[1-3])\.{_NORM}",
            lambda m: f"backbone.bottom_up.res{int(m['l']) + 1}.{m['b']}.conv{m['j']}.norm.{m['p']}",
        ),
        (
            r"backbone\.body\.layer(?P<l>[1-4])\.(?P<b>\d+)\.downsample\.0\.weight",
            lambda m: f"backbone.bottom_up.res{int(m['l']) + 1}.{m['b']}.shortcut.weight",
        ),
        (
            rf"backbone\.body\.layer(?P<l>[1-4])\.(?P<b>\d+)\.downsample\.1\.{_NORM}",
            lambda m: f"backbone.bottom_up.res{int(m['l']) + 1}.{m['b']}.shortcut.norm.{m['p']}",
        ),
        # torchvision >= 0.13 wraps each FPN conv in a Conv2dNormActivation (".0."); older files do not.
        (rf"backbone\.fpn\.inner_blocks\.(?P<i>[0-2])\.(?:0\.)?{_PARAM}", lambda m: f"backbone.fpn_lateral{int(m['i']) + 3}.{m['p']}"),
        (rf"backbone\.fpn\.layer_blocks\.(?P<i>[0-2])\.(?:0\.)?{_PARAM}", lambda m: f"backbone.fpn_output{int(m['i']) + 3}.{m['p']}"),
        (rf"backbone\.fpn\.extra_blocks\.(?P<l>p6|p7)\.{_PARAM}", lambda m: f"backbone.top_block.{m['l']}.{m['p']}"),
        (
            rf"head\.(?P<h>classification_head|regression_head)\.conv\.(?P<i>\d+)\.0\.{_PARAM}",
            lambda m: f"head.{_HEADS[m['h']]}.{int(m['i']) * subnet_step}.{m['p']}",
        ),
        (
            rf"head\.(?P<h>classification_head|regression_head)\.conv\.(?P<i>\d+)\.1\.{_PARAM}",
            lambda m: f"head.{_HEADS[m['h']]}.{int(m['i']) * subnet_step + 1}.{m['p']}",
        ),
        # Older torchvision heads: conv.{2i} is the i-th conv, conv.{2i+1} its ReLU (no norm).
        (
            rf"head\.(?P<h>classification_head|regression_head)\.conv\.(?P<i>\d*[02468])\.{_PARAM}",
            lambda m: f"head.{_HEADS[m['h']]}.{m['i']}.{m['p']}",
        ),
        (
            rf"head\.(?P<h>classification_head\.cls_logits|regression_head\.bbox_reg)\.{_PARAM}",
            lambda m: f"head.{_PREDICTORS[m['h']]}.{m['p']}",
        ),
    ]


def _plugin_rules(subnet_step: int) -> List[Tuple[str, Callable]]:
    """(plugin name pattern, torchvision name of a match), the inverse of `_torchvision_rules`' current names."""
    heads = {v: k for k, v in _HEADS.items()}
    predictors = {v: k for k, v in _PREDICTORS.items()}
    return [
        (r"backbone\.bottom_up\.stem\.conv1\.weight", lambda m: "backbone.body.conv1.weight"),
        (rf"backbone\.bottom_up\.stem\.conv1\.norm\.{_NORM}", lambda m: f"backbone.body.bn1.{m['p']}"),
        (
            r"backbone\.bottom_up\.res(?P<l>[2-5])\.(?P<b>\d+)\.conv(?P<j>[1-3])\.weight",
            lambda m: f"backbone.body.layer{int(m['l']) - 1}.{m['b']}.conv{m['j']}.weight",
        ),
        (
            rf"backbone\.bottom_up\.res(?P<l>[2-5])\.(?P<b>\d+)\.conv(?P<j>[1-3])\.norm\.{_NORM}",
            lambda m: f"backbone.body.layer{int(m['l']) - 1}.{m['b']}.bn{m['j']}.{m['p']}",
        ),
        (
            r"backbone\.bottom_up\.res(?P<l>[2-5])\.(?P<b>\d+)\.shortcut\.weight",
            lambda m: f"backbone.body.layer{int(m['l']) - 1}.{m['b']}.downsample.0.weight",
        ),
        (
            rf"backbone\.bottom_up\.res(?P<l>[2-5])\.(?P<b>\d+)\.shortcut\.norm\.{_NORM}",
            lambda m: f"backbone.body.layer{int(m['l']) - 1}.{m['b']}.downsample.1.{m['p']}",
        ),
        (rf"backbone\.fpn_lateral(?P<i>[3-5])\.{_PARAM}", lambda m: f"backbone.fpn.inner_blocks.{int(m['i']) - 3}.0.{m['p']}"),
        (rf"backbone\.fpn_output(?P<i>[3-5])\.{_PARAM}", lambda m: f"backbone.fpn.layer_blocks.{int(m['i']) - 3}.0.{m['p']}"),
        (rf"backbone\.top_block\.(?P<l>p6|p7)\.{_PARAM}", lambda m: f"backbone.fpn.extra_blocks.{m['l']}.{m['p']}"),
        (
            rf"head\.(?P<h>cls_subnet|bbox_subnet)\.(?P<i>\d+)\.{_PARAM}",
            lambda m: f"head.{heads[m['h']]}.conv.{int(m['i']) // subnet_step}.{int(m['i']) % subnet_step}.{m['p']}",
        ),
        (rf"head\.(?P<h>cls_score|bbox_pred)\.{_PARAM}", lambda m: f"head.{predictors[m['h']]}.{m['p']}"),
    ]


def _rename(state: Dict[str, torch.Tensor], rules, source: str) -> Dict[str, torch.Tensor]:
    compiled = [(re.compile(pattern), name) for pattern, name in rules]
    renamed = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, name in compiled:
            match = pattern.fullmatch(key)
            if match:
                renamed[name(match)] = value
                break
        else:
            raise WeightsFormatError(f"{source}: unexpected key {key!r}")
    return renamed


def torchvision_to_plugin(
    state: Dict[str, torch.Tensor], num_sizes: int, num_ratios: int, head_norm: bool, source: str
) -> Dict[str, torch.Tensor]:
    """
    A torchvision RetinaNet state_dict as RetinaNetPlugin's: names mapped, BatchNorm's
    num_batches_tracked dropped, the predictors' anchors reordered to Detectron2's. `head_norm`:
    the head has a norm after each subnet conv (v2). `source` names the file in errors.
    """
    renamed = _rename(state, _torchvision_rules(3 if head_norm else 2), source)
    for name in ("head.cls_score", "head.bbox_pred"):
        for param in ("weight", "bias"):
            key = f"{name}.{param}"
            if key in renamed:
                renamed[key] = reorder_anchors(renamed[key], num_ratios, num_sizes)
    return renamed


def plugin_to_torchvision(
    state: Dict[str, torch.Tensor], num_sizes: int, num_ratios: int, head_norm: bool, source: str
) -> Dict[str, torch.Tensor]:
    """
    The inverse of `torchvision_to_plugin`, with a zero num_batches_tracked after every norm of
    the ResNet, so that torchvision's models built with BatchNorm2d (weights=None) load it
    strictly (its FrozenBatchNorm2d drops that key when loading).
    """
    predictors = {}
    for name in ("head.cls_score", "head.bbox_pred"):
        for param in ("weight", "bias"):
            key = f"{name}.{param}"
            if key in state:
                predictors[key] = reorder_anchors(state[key], num_sizes, num_ratios)
    renamed = _rename({**state, **predictors}, _plugin_rules(3 if head_norm else 2), source)
    for key in [k for k in renamed if k.endswith(".running_var")]:
        renamed[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
    return renamed


def reorder_anchors(predictor: torch.Tensor, outer: int, inner: int) -> torch.Tensor:
    """
    A predictor's weight (A*C, Cin, kh, kw) or bias (A*C,) with its anchors, indexed
    a = i_outer * inner + i_inner, reindexed i_inner * outer + i_outer (A = outer * inner).
    torchvision orders each location's anchors ratio-major (outer = ratios), Detectron2
    size-major: reorder_anchors(w, R, S) takes torchvision's order to Detectron2's, (w, S, R) back.
    """
    per_anchor = predictor.shape[0] // (outer * inner)
    shaped = predictor.reshape(outer, inner, per_anchor, *predictor.shape[1:])
    return shaped.transpose(0, 1).reshape(predictor.shape).contiguous()
