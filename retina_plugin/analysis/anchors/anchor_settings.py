"""
The anchors: `AnchorSetting`, the values of MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS, and
`AnchorGrid`, the model's own anchors for an image: the anchor generator cfg builds
(MODEL.ANCHOR_GENERATOR), on the feature maps MODEL.RETINANET.IN_FEATURES of the backbone cfg
builds, for the image alone padded to the backbone's size divisibility (in a batch, padding to
the largest image adds anchors beyond the right and bottom edges, which only matter for boxes
touching those edges). Also how settings print (`format_nested`, `round_significant`) and
broadcast over levels (`per_level`), shared with the search and the report.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.modeling import build_anchor_generator, build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator

from ...config import anchor_params_per_level, check_retina_plugin_config
from .resized_boxes import AnchorCoverageError

__all__ = ["AnchorGrid", "AnchorSetting", "format_nested", "per_level", "round_significant"]


def _format_number(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e9 else repr(v)


def _format_list(values) -> str:
    return "[" + ", ".join(_format_number(v) for v in values) + "]"


def round_significant(x: float, digits: int) -> float:
    """`x` rounded to `digits` significant digits, as a setting prints it."""
    return float(f"{x:.{digits}g}")


def format_nested(values) -> str:
    """Per-level values as a config writes them: [[32, 40.3], [64]]."""
    return "[" + ", ".join(_format_list(v) for v in values) + "]"


def _shared_or_per_level(values) -> Tuple[Tuple[float, ...], ...]:
    """Per-level tuples as one tuple for every level when they are all equal, else one per level."""
    values = tuple(tuple(float(v) for v in level) for level in values)
    return values[:1] if all(v == values[0] for v in values) else values


def per_level(values: Tuple[Tuple[float, ...], ...], num_levels: int) -> Tuple[Tuple[float, ...], ...]:
    """One tuple per level: a single shared tuple repeated `num_levels` times, else `values`."""
    return values * num_levels if len(values) == 1 else values


@dataclass(frozen=True)
class AnchorSetting:
    """
    The anchors of MODEL.ANCHOR_GENERATOR, as Detectron2's DefaultAnchorGenerator (and
    RetinaAnchorGenerator) read them: `sizes`, per level every anchor size (the square root of
    its area, in pixels; RetinaNet's octave scales applied), and `aspect_ratios` (height /
    width), one tuple for every level or one per level. A level has len(sizes) x len(ratios)
    anchors per location.
    """

    sizes: Tuple[Tuple[float, ...], ...]
    aspect_ratios: Tuple[Tuple[float, ...], ...]

    @classmethod
    def from_config(cls, cfg) -> "AnchorSetting":
        """SIZES and ASPECT_RATIOS of cfg, broadcast over MODEL.RETINANET.IN_FEATURES as Detectron2 does."""
        node, num_levels = cfg.MODEL.ANCHOR_GENERATOR, len(cfg.MODEL.RETINANET.IN_FEATURES)
        sizes = anchor_params_per_level(node.SIZES, num_levels, "MODEL.ANCHOR_GENERATOR.SIZES")
        ratios = anchor_params_per_level(node.ASPECT_RATIOS, num_levels, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
        return cls(tuple(tuple(float(v) for v in level) for level in sizes), _shared_or_per_level(ratios))

    def level_cell_anchors(self) -> List[torch.Tensor]:
        """Per level the (A, 4) anchors of one location, centred on (0, 0), as DefaultAnchorGenerator makes them."""
        generator = DefaultAnchorGenerator(
            sizes=[list(s) for s in self.sizes], aspect_ratios=[list(r) for r in self.aspect_ratios],
            strides=[1] * len(self.sizes),
        )
        return list(generator.cell_anchors)

    def _items(self):
        return (("SIZES", self.sizes), ("ASPECT_RATIOS", self.aspect_ratios))

    def config_opts(self) -> List[str]:
        """KEY VALUE command-line opts."""
        opts = []
        for key, values in self._items():
            opts += [f"MODEL.ANCHOR_GENERATOR.{key}", format_nested(values)]
        return opts

    def config_yaml(self) -> str:
        """The same settings as YAML lines to paste into a config file."""
        lines = ["MODEL:", "  ANCHOR_GENERATOR:"]
        lines += [f"    {key}: {format_nested(values)}" for key, values in self._items()]
        return "\n".join(lines)

    def apply_to(self, cfg):
        """A copy of `cfg` with these anchors."""
        cfg = cfg.clone()
        cfg.defrost()
        cfg.merge_from_list(self.config_opts())
        return cfg

    def to_dict(self) -> Dict[str, list]:
        return {key: [[float(v) for v in level] for level in values] for key, values in self._items()}


class AnchorGrid:
    """
    The model's anchors for any image size: the anchor generator `cfg` builds, on the levels
    cfg.MODEL.RETINANET.IN_FEATURES of the backbone `cfg` builds, for an image padded as
    `ImageList.from_tensors` pads it with the backbone's padding.
    """

    def __init__(self, generator, level_names: Sequence[str], strides: Sequence[int], feature_shapes,
                 size_divisibility: int = 0, square_size: int = 0):
        self.generator = generator
        self.level_names = list(level_names)
        self.strides = [int(s) for s in strides]
        self.feature_shapes = list(feature_shapes)
        self.size_divisibility = int(size_divisibility)
        self.square_size = int(square_size)
        self.offset = float(generator.offset)
        self.level_cell_anchors = [c.detach().float().cpu() for c in generator.cell_anchors]

    @classmethod
    def from_config(cls, cfg) -> "AnchorGrid":
        """`cfg`: checked, as `retina_plugin.load_config` returns it."""
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        names = list(cfg.MODEL.RETINANET.IN_FEATURES)
        missing = [f for f in names if f not in shapes]
        if missing:
            raise AnchorCoverageError(
                f"cfg.MODEL.RETINANET.IN_FEATURES = {names}: the backbone {cfg.MODEL.BACKBONE.NAME} "
                f"has no {missing}; it outputs {sorted(shapes)}"
            )
        feature_shapes = [shapes[f] for f in names]
        generator = build_anchor_generator(cfg, feature_shapes)
        if len(set(generator.num_cell_anchors)) != 1:
            raise AnchorCoverageError(
                "the head shares weights across levels, so every level needs the same number of "
                f"anchors, got {generator.num_cell_anchors}"
            )
        square_size = (backbone.padding_constraints or {}).get("square_size", 0)
        return cls(
            generator, names, [s.stride for s in feature_shapes],
            feature_shapes, backbone.size_divisibility, square_size,
        )

    def with_anchors_of(self, cfg) -> "AnchorGrid":
        """The same levels and padding with the anchor generator of `cfg` (checked here)."""
        check_retina_plugin_config(cfg)
        return AnchorGrid(
            build_anchor_generator(cfg, self.feature_shapes), self.level_names, self.strides,
            self.feature_shapes, self.size_divisibility, self.square_size,
        )

    def feature_sizes(self, image_size: Tuple[int, int]) -> List[Tuple[int, int]]:
        """(Hi, Wi) of each level for an image of `image_size` (height, width) alone in a batch."""
        height, width = image_size
        if self.square_size > 0:
            height = width = self.square_size
        if self.size_divisibility > 1:
            d = self.size_divisibility
            height, width = -(-height // d) * d, -(-width // d) * d
        # Every stride-2 conv of the backbone (kernel k, padding (k - 1) // 2) rounds up.
        return [(-(-height // s), -(-width // s)) for s in self.strides]

    def anchors(self, image_size: Tuple[int, int]) -> List[torch.Tensor]:
        """Per level the (Hi*Wi*A, 4) XYXY anchors of an image of `image_size` (height, width)."""
        sizes = self.feature_sizes(image_size)
        features = [torch.empty((1, 0, h, w)) for h, w in sizes]
        level_anchors = [b.tensor for b in self.generator(features)]
        for (h, w), cells, anchors in zip(sizes, self.level_cell_anchors, level_anchors):
            # anchor_coverage indexes anchors as (y * Wi + x) * A + a.
            if len(anchors) != h * w * len(cells):
                raise AnchorCoverageError(
                    f"anchor generator {type(self.generator).__name__} gives {len(anchors)} anchors on a "
                    f"{h}x{w} map, not {h}x{w}x{len(cells)}"
                )
        return level_anchors
