"""
Pretrained 3-channel (RGB) stem weights for a model with another number of input channels
(len(MODEL.PIXEL_MEAN) = N bands: RGB plus near-infrared, a single SAR or grayscale band, ...).

The ResNet stem's first convolution is the only tensor whose shape depends on N. Its
checkpoint tensor (O, 3, kh, kw) becomes (O, N, kh, kw) before the checkpointer's shape check,
which would otherwise drop it:

- N > 3: channels 0..2 keep the pretrained filters (the RGB channels, in INPUT.FORMAT order);
  each further channel starts from the mean of the three. A further band at its PIXEL_MEAN
  (0 after normalisation) leaves the pretrained response unchanged.
- N < 3: each channel gets the sum of the three filters divided by N, so an image equal in all
  its channels gives the response the pretrained model gives that image repeated in R, G, B.
"""
from typing import Dict, Iterable, Optional

import torch
from detectron2.checkpoint.c2_model_loading import convert_basic_c2_names

__all__ = ["STEM_WEIGHT", "adapt_stem_weight", "checkpoint_stem_key", "adapt_checkpoint_stem"]

# The stem convolution's weight in RetinaNetPlugin's (and Detectron2's RetinaNet's) state_dict.
STEM_WEIGHT = "backbone.bottom_up.stem.conv1.weight"

PRETRAINED_CHANNELS = 3


def adapt_stem_weight(weight: torch.Tensor, num_channels: int) -> torch.Tensor:
    """
    Args:
        weight: (O, 3, kh, kw) pretrained stem filters.
        num_channels: N >= 1, the model's input channels.
    Returns:
        (O, N, kh, kw) in `weight`'s dtype, as the module doc describes.
    """
    if weight.dim() != 4 or weight.shape[1] != PRETRAINED_CHANNELS:
        raise ValueError(f"expected stem filters (O, 3, kh, kw), got {tuple(weight.shape)}")
    if num_channels < 1:
        raise ValueError(f"num_channels must be >= 1, got {num_channels}")
    if num_channels >= PRETRAINED_CHANNELS:
        extra = weight.mean(dim=1, keepdim=True).expand(-1, num_channels - PRETRAINED_CHANNELS, -1, -1)
        return torch.cat([weight, extra], dim=1)
    return (weight.sum(dim=1, keepdim=True) / num_channels).repeat(1, num_channels, 1, 1)


def checkpoint_stem_key(keys: Iterable[str], matching_heuristics: bool, caffe2: bool) -> Optional[str]:
    """
    The checkpoint key that loads into STEM_WEIGHT, or None: the key itself (or with DDP's
    "module." prefix); for a checkpoint loaded by name matching (ImageNet / Caffe2 `.pkl`:
    "conv1_w", "stem.conv1.weight"), the longest key that Detectron2's `align_and_update_state_dicts`
    matches to it, after its Caffe2 renaming when `caffe2`.
    """
    keys = list(keys)
    if not matching_heuristics:
        return next((k for k in (STEM_WEIGHT, "module." + STEM_WEIGHT) if k in keys), None)
    names = convert_basic_c2_names(keys) if caffe2 else keys
    matches = [(len(name), key) for name, key in zip(names, keys) if name == STEM_WEIGHT or STEM_WEIGHT.endswith("." + name)]
    return max(matches)[1] if matches else None


def adapt_checkpoint_stem(checkpoint: Dict, model_state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """
    Give the stem weight of `checkpoint` (fvcore's dict: "model", "matching_heuristics",
    "__author__"), in place, the input channels of the model's stem when it has 3 and the
    model another number. Returns a line saying what was done, or None when nothing was.
    """
    target = model_state_dict.get(STEM_WEIGHT)
    if target is None or target.dim() != 4 or target.shape[1] == PRETRAINED_CHANNELS:
        return None
    weights = checkpoint["model"]
    key = checkpoint_stem_key(
        weights, checkpoint.get("matching_heuristics", False), checkpoint.get("__author__") == "Caffe2"
    )
    if key is None:
        return None
    weight = torch.as_tensor(weights[key])
    if weight.dim() != 4 or weight.shape[1] != PRETRAINED_CHANNELS or weight.shape[2:] != target.shape[2:]:
        return None
    num_channels = target.shape[1]
    weights[key] = adapt_stem_weight(weight, num_channels)
    if num_channels > PRETRAINED_CHANNELS:
        how = (
            f"channels 0-2 keep the pretrained filters, channel{'s' if num_channels > 4 else ''} "
            f"{'3' if num_channels == 4 else f'3-{num_channels - 1}'} start{'' if num_channels > 4 else 's'} from their mean"
        )
    else:
        how = f"each channel starts from the sum of the pretrained filters / {num_channels}"
    return (
        f"{key}: the checkpoint's stem takes 3 input channels, the model {num_channels} "
        f"(len(MODEL.PIXEL_MEAN)); adapted 3 -> {num_channels} channels: {how}"
    )
