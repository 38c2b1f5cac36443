"""
Plot a Detectron2 run's `metrics.json`: losses, learning rate and box AP against iteration.

Detectron2's `JSONWriter` appends one JSON dict per line to `OUTPUT_DIR/metrics.json`, with an
"iteration" and the scalars logged up to it: training lines carry "total_loss", "loss_cls",
"loss_box_reg", "lr", times...; evaluation results ("bbox/AP", "bbox/AP50", ...) come on the
line of the iteration they were computed at, alone or next to that iteration's training scalars.
Each metric is therefore read on its own from every line that has it. A resumed run appends
iterations it had already logged; the last value logged for an iteration wins.
"""
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import InputFileError

__all__ = [
    "METRICS_FILE_NAME",
    "AP_KEYS",
    "MetricsLog",
    "find_metrics_file",
    "load_metrics",
    "plot_metrics",
]

METRICS_FILE_NAME = "metrics.json"
TOTAL_LOSS_KEY = "total_loss"
LOSS_PREFIX = "loss_"
LR_KEY = "lr"
AP_KEYS = ("bbox/AP", "bbox/AP50", "bbox/AP75")



@dataclass
class MetricsLog:
    """
    The metrics of one run.

    Attributes:
        path: the metrics.json file read.
        series: per metric name, its (iteration, value) points sorted by iteration.
        num_lines: the well-formed lines read.
        num_skipped: the malformed lines skipped (not JSON, not a dict, or no integer "iteration").
    """

    path: str
    series: Dict[str, List[Tuple[int, float]]] = field(default_factory=dict)
    num_lines: int = 0
    num_skipped: int = 0

    def loss_keys(self) -> List[str]:
        """The loss metrics present: "total_loss" first, then the "loss_*" terms by name."""
        terms = sorted(k for k in self.series if k.startswith(LOSS_PREFIX))
        return ([TOTAL_LOSS_KEY] if TOTAL_LOSS_KEY in self.series else []) + terms

    def ap_keys(self) -> List[str]:
        """The box AP metrics of AP_KEYS present."""
        return [k for k in AP_KEYS if k in self.series]


def find_metrics_file(path: str) -> str:
    """
    The metrics file for `path`: `path/metrics.json` when `path` is a directory (a run's
    OUTPUT_DIR), else `path` itself.

    Raises:
        InputFileError: naming the file if it does not exist.
    """
    metrics_path = os.path.join(path, METRICS_FILE_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(metrics_path):
        raise InputFileError(f"Metrics file not found: {metrics_path}")
    return metrics_path


def _is_number(value) -> bool:
    """Whether a JSON value is a finite number (booleans are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_line(line: str):
    """The dict of a metrics line, or None if it is malformed (no integer "iteration")."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    iteration = record.get("iteration")
    if not _is_number(iteration) or int(iteration) != iteration:
        return None
    return record


def load_metrics(path: str) -> MetricsLog:
    """
    Read a metrics.json (or the one in directory `path`), skipping and counting malformed lines.

    Raises:
        InputFileError: naming the file if it does not exist.
        InputFileError: naming the file if no line has an iteration and a loss, "lr" or box AP.
    """
    metrics_path = find_metrics_file(path)
    log = MetricsLog(path=metrics_path)
    points: Dict[str, Dict[int, float]] = {}
    with open(metrics_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            record = _parse_line(line)
            if record is None:
                log.num_skipped += 1
                continue
            log.num_lines += 1
            iteration = int(record["iteration"])
            for key, value in record.items():
                if key != "iteration" and _is_number(value):
                    points.setdefault(key, {})[iteration] = float(value)
    log.series = {k: sorted(v.items()) for k, v in points.items()}
    if not (log.loss_keys() or LR_KEY in log.series or log.ap_keys()):
        raise InputFileError(
            f"No usable lines in {metrics_path}: {log.num_lines} well-formed and "
            f"{log.num_skipped} malformed lines, none with an iteration and a loss, "
            f"'{LR_KEY}' or {', '.join(AP_KEYS)}"
        )
    return log


def _plot_series(ax, log: MetricsLog, keys: List[str], empty_text: str, marker=None) -> None:
    """
    Draw metrics `keys` of `log` on `ax` against iteration, or `empty_text` if there are none.
    Points get `marker`; a metric with a single point always gets one, so that it shows.
    """
    if not keys:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_yticks([])
        return
    for key in keys:
        iterations, values = zip(*log.series[key])
        width = 2.0 if key == TOTAL_LOSS_KEY else 1.2
        ax.plot(
            iterations,
            values,
            label=f"{key} (last {values[-1]:.4g})",
            linewidth=width,
            marker=marker or ("o" if len(values) == 1 else None),
        )
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)


def plot_metrics(log: MetricsLog, out_path: str) -> str:
    """
    Write a PNG of three panels against iteration: the losses, the learning rate, and box
    AP / AP50 / AP75 ("no evaluation yet" when the run has none).

    Returns:
        str: `out_path`.
    """
    fig = Figure(figsize=(9, 10), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_ap = fig.subplots(3, 1, sharex=True)

    _plot_series(ax_loss, log, log.loss_keys(), "no training losses")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Losses")

    _plot_series(ax_lr, log, [LR_KEY] if LR_KEY in log.series else [], "no learning rate")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("Learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))

    _plot_series(ax_ap, log, log.ap_keys(), "no evaluation yet", marker="o")
    ax_ap.set_ylabel("AP (%)")
    ax_ap.set_title("Box AP (COCO)")
    ax_ap.set_xlabel("iteration")

    skipped = f", {log.num_skipped} malformed skipped" if log.num_skipped else ""
    lines = f"{log.num_lines} line" + ("" if log.num_lines == 1 else "s")
    fig.suptitle(f"{log.path} ({lines}{skipped})", fontsize="medium")
    fig.tight_layout()
    out_dir = os.path.dirname(out_path)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out_path, format="png")
    return out_path
