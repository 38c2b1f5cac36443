"""Feature levels P3-P7 of the component tests: strides, shapes and zero feature maps."""
import torch
from detectron2.layers import ShapeSpec

STRIDES = [8, 16, 32, 64, 128]
# Feature-map sizes of a 256x320 input at strides 8..128 (P3 .. P7).
FEATURE_SIZES_256x320 = [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]


def level_shapes(channels=256):
    return [ShapeSpec(channels=channels, stride=s) for s in STRIDES]


def zero_features(sizes, n=1, channels=256):
    return [torch.zeros(n, channels, h, w) for h, w in sizes]
