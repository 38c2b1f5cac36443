"""
The analysis of one dataset under one config (`analyze_anchor_coverage`), and its report: every
number as JSON (`AnchorCoverageReport.to_dict`) and as text (`format_anchor_coverage_report`).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .anchor_coverage import matcher_iou_thresholds, measure_anchor_coverage
from .anchor_search import suggest_anchor_setting
from .anchor_settings import AnchorGrid, AnchorSetting, format_nested
from .coverage_statistics import IOU_HISTOGRAM_BINS, IOU_QUANTILES, SIZE_CATEGORIES, AnchorCoverage
from .resized_boxes import AnchorCoverageError, ResizedBoxes, load_resized_boxes

__all__ = ["AnchorCoverageReport", "analyze_anchor_coverage", "format_anchor_coverage_report"]


@dataclass
class AnchorCoverageReport:
    """The analysis of one dataset under one config, and the suggested anchors if any."""

    resized: ResizedBoxes
    current: AnchorCoverage
    suggestion: Optional[AnchorSetting] = None
    suggested: Optional[AnchorCoverage] = None
    search: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        """Every number of the report, JSON-serialisable."""
        resized = self.resized
        train = resized.split == "train"
        out = {
            "dataset": resized.dataset_name,
            "split": resized.split,
            "num_images": len(resized.boxes),
            "num_boxes": resized.num_boxes,
            "resize": {
                "short_edge": resized.short_edge,
                "max_size": resized.max_size,
                "short_edge_from": "max(INPUT.MIN_SIZE_TRAIN)" if train else "INPUT.MIN_SIZE_TEST",
            },
            "box_area_measured_in": "resized image",
            "size_categories": {name: [low, None if math.isinf(high) else high]
                                for name, low, high in SIZE_CATEGORIES},
            "matching": {
                "fg_iou_threshold": self.current.fg_threshold,
                "bg_iou_threshold": self.current.bg_threshold,
                "allow_low_quality_matches": self.current.allow_low_quality_matches,
            },
            "best_iou_quantiles": list(IOU_QUANTILES),
            "best_iou_histogram_bin_edges": [k / IOU_HISTOGRAM_BINS for k in range(IOU_HISTOGRAM_BINS + 1)],
            "current": self.current.summary(),
            "suggested": None,
            "search": self.search,
        }
        if self.suggestion is not None:
            out["suggested"] = dict(
                self.suggested.summary(),
                config_yaml=self.suggestion.config_yaml(),
                config_opts=self.suggestion.config_opts(),
            )
        return out


def analyze_anchor_coverage(cfg, dataset_name: str, split: str = "train", max_images: Optional[int] = None,
                            suggest: bool = True) -> AnchorCoverageReport:
    """
    Match the boxes of the registered dataset `dataset_name` (resized for `split`, "train" or
    "test") to the anchors of `cfg` (checked, as `retina_plugin.load_config` returns it) as
    training does, and, when `suggest`, search a better MODEL.ANCHOR_GENERATOR.SIZES and
    ASPECT_RATIOS and match the boxes to them too. What is modelled, and how: the docstrings of
    `resized_boxes`, `anchor_settings` and `anchor_coverage`.
    """
    matcher_iou_thresholds(cfg)  # a config without foreground fails before the dataset loads
    resized = load_resized_boxes(cfg, dataset_name, split, max_images)
    grid = AnchorGrid.from_config(cfg)
    current = measure_anchor_coverage(resized, grid, cfg)
    report = AnchorCoverageReport(resized, current)
    if not suggest:
        return report
    setting = AnchorSetting.from_config(cfg)
    if not all(torch.equal(a, b) for a, b in zip(setting.level_cell_anchors(), grid.level_cell_anchors)):
        raise AnchorCoverageError(
            f"anchor generator {cfg.MODEL.ANCHOR_GENERATOR.NAME} does not make the anchors of "
            "MODEL.ANCHOR_GENERATOR.SIZES x ASPECT_RATIOS (as DefaultAnchorGenerator does), so no "
            "setting of those keys can be suggested for it"
        )
    grid_sizes = torch.cat([
        torch.tensor(grid.feature_sizes(size)).expand(len(b), -1, -1)
        for b, size in zip(resized.boxes, resized.image_sizes)
    ])
    setting, report.search = suggest_anchor_setting(
        current.boxes, grid_sizes, grid.strides, grid.offset, setting, current.fg_threshold
    )
    suggested_cfg = setting.apply_to(cfg)
    suggested = measure_anchor_coverage(resized, grid.with_anchors_of(suggested_cfg), suggested_cfg)
    if int(suggested.covered.sum()) > int(current.covered.sum()):
        report.suggestion, report.suggested = setting, suggested
    return report


def _percent(x) -> str:
    if x is None:
        return "-"
    # 99.95% is not 100%: show a second decimal where one would round up to 100.
    return f"{100 * x:.2f}%" if x < 1 and f"{100 * x:.1f}" == "100.0" else f"{100 * x:.1f}%"


def _number(x, digits=2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> List[str]:
    """Text table: first column left-aligned, the others right-aligned."""
    rows = [[str(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row):
        cells = [v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))]
        return (indent + "  ".join(cells)).rstrip()

    return [line(rows[0]), line(["-" * w for w in widths]), *[line(r) for r in rows[1:]]]


def _coverage_rows(summary) -> List[List[str]]:
    rows = []
    for name, stats in [("all", summary["all"]), *summary["by_size"].items()]:
        q = stats["best_iou_quantiles"]
        rows.append([
            name, str(stats["num_boxes"]), _percent(stats["coverage"]), _number(stats["mean_best_iou"]),
            *[_number(q.get(k)) for k in ("0.05", "0.25", "0.5", "0.75")],
            _number(stats["fg_anchors_per_box"]["mean"], 1), _number(stats["positives_per_box"]["mean"], 1),
        ])
    return rows


def _describe_anchors(anchors: Dict[str, object]) -> str:
    sizes = format_nested([round(s, 2) for s in level] for level in anchors["SIZES"])
    ratios = format_nested([round(r, 3) for r in level] for level in anchors["ASPECT_RATIOS"])
    return f"{anchors['generator']}: sizes per level {sizes}, aspect ratios (h/w) {ratios}"


def _coverage_section(title: str, coverage: AnchorCoverage, summary) -> List[str]:
    fg = _number(coverage.fg_threshold)
    lines = [title, "  anchors: " + _describe_anchors(summary["anchors"]), ""]
    lines += _table(
        ["boxes", "count", f"IoU>={fg}", "mean IoU", "p5", "p25", "median", "p75", f"IoU>={fg} anchors/box",
         "positives/box"],
        _coverage_rows(summary),
        indent="  ",
    )
    total = summary["all"]
    lines += [
        "",
        f"  boxes with no anchor of IoU >= {fg}: {total['fg_anchors_per_box']['boxes_with_none']}; of these "
        f"{summary['boxes_with_low_quality_positives_only']} still get positives from low-quality matches; "
        f"boxes with no positive anchor at all: {total['positives_per_box']['boxes_with_none']}",
    ]
    if summary["images_with_every_anchor_positive"]:
        lines.append(f"  WARNING: in {summary['images_with_every_anchor_positive']} image(s) a box overlaps no "
                     "anchor, and the Matcher's low-quality matches then label every anchor foreground")
    lines.append("")
    lines += _table(
        ["level", "stride", "positives", "share", "boxes with positives here", "boxes whose best anchor is here"],
        [[level["name"], level["stride"], level["positives"], _percent(level["share_of_positives"]),
          level["boxes_with_positives"], level["boxes_with_best_anchor"]] for level in summary["levels"]],
        indent="  ",
    )
    counts = total["best_iou_histogram"]
    lines += ["", "  best IoU histogram:"]
    pairs = [(k, counts[2 * k] + counts[2 * k + 1]) for k in range(IOU_HISTOGRAM_BINS // 2)]
    peak = max(max(c for _, c in pairs), 1)
    for k, count in pairs:
        bar = "#" * round(40 * count / peak)
        lines.append(f"    [{k / 10:.1f}, {(k + 1) / 10:.1f}{']' if k == 9 else ')'} {count:>7}  {bar}".rstrip())
    return lines


def format_anchor_coverage_report(report: AnchorCoverageReport) -> str:
    """A readable report: tables of coverage and positives, and the lines to paste."""
    data = report.to_dict()
    current = report.current
    resize = data["resize"]
    lines = [
        f"Anchor coverage of {data['dataset']}: {data['num_images']} images, {data['num_boxes']} boxes",
        f"  resized for {data['split']}: shorter side {resize['short_edge']} ({resize['short_edge_from']}), "
        f"longer side <= {resize['max_size']}; box areas and sizes are measured in the resized image "
        "(small < 32^2 <= medium < 96^2 <= large)",
        f"  levels {', '.join(f'{n} (stride {s})' for n, s in zip(current.level_names, current.strides))}",
        f"  matching as in training: IoU >= {current.fg_threshold:g} foreground, < {current.bg_threshold:g} "
        f"background, low-quality matches {'on' if current.allow_low_quality_matches else 'off'}; "
        "'positives' are the anchors training labels foreground for the box",
        "",
    ]
    lines += _coverage_section("Current anchors", current, data["current"])
    lines.append("")
    if report.suggestion is None:
        searched = data["search"].get("candidates_evaluated", 0)
        lines.append(f"Suggested anchors: none of the {searched} settings searched covers more boxes "
                     "than the current one.")
        return "\n".join(lines)
    after = data["suggested"]
    search = data["search"]
    title = (f"Suggested anchors: coverage {_percent(data['current']['all']['coverage'])} -> "
             f"{_percent(after['all']['coverage'])} (searched {search['candidates_evaluated']} settings "
             f"in {search['search_seconds']:.1f} s)")
    lines += _coverage_section(title, report.suggested, after)
    lines += ["", "Paste into the config (YAML):", "", after["config_yaml"], "",
              "or append to the command line:", "",
              " ".join(f'"{v}"' if " " in v else v for v in after["config_opts"])]
    return "\n".join(lines)
