"""
tools/plot_metrics.py: Plot the losses, learning rate and box AP of a Detectron2 run from its metrics.json.

    python tools/plot_metrics.py output/retinanet_R50                 # -> output/retinanet_R50/metrics.png
    python tools/plot_metrics.py output/retinanet_R50/metrics.json --out curves.png
"""
import os
import sys

from ..engine.plot import load_metrics, plot_metrics
from .arguments import OneLineParser, one_line_errors

PROG = "plot_metrics"


def get_parser():
    """The tool's command-line arguments."""
    parser = OneLineParser(prog=PROG, description="Plot a Detectron2 run's metrics.json")
    parser.add_argument(
        "path", metavar="OUTPUT_DIR_OR_METRICS_JSON", help="a run's OUTPUT_DIR or its metrics.json"
    )
    parser.add_argument(
        "--out", metavar="PNG", help="the PNG to write (default: metrics.png next to the json)"
    )
    return parser


def main(argv=None):
    """Read the metrics, write the PNG and say where it went."""
    args = get_parser().parse_args(argv)
    with one_line_errors(PROG):
        log = load_metrics(args.path)
    out_path = args.out or os.path.join(os.path.dirname(log.path), "metrics.png")
    if log.num_skipped:
        print(f"Skipped {log.num_skipped} malformed line(s) of {log.path}", file=sys.stderr)
    plot_metrics(log, out_path)
    print(f"Wrote {out_path} (from {log.path})")
