"""
metrics.json read as one run after --resume. A run resumed from the checkpoint of iteration k
trains the iterations after k again, and Detectron2's JSONWriter appends: without this, what
the interrupted run wrote after k would stay beside what the resumed run writes for the same
iterations.
"""
import json
import logging
import os

__all__ = ["metrics_path", "drop_metrics_after"]

logger = logging.getLogger(__name__)


def metrics_path(output_dir: str) -> str:
    """Where Detectron2's default writers put the metrics of a run in `output_dir`."""
    return os.path.join(output_dir, "metrics.json")


def _iteration(line: bytes):
    """The iteration of one metrics line; None for a line torn by a kill (never complete, so never kept)."""
    try:
        return json.loads(line).get("iteration", -1)
    except ValueError:
        return None


def drop_metrics_after(path: str, iteration: int) -> int:
    """
    Cut the metrics file `path` (a JSON object a line, in the order written) after its last line
    at or before `iteration`, so that a run resumed from that iteration writes each later one
    once. Returns how many lines were dropped.

    One truncate does it: a kill leaves the file as it was or cut, and the JSONWriter, which
    already holds the file open for appending, goes on at the new end (a rewritten file under the
    same name would leave it writing to the old one).
    """
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    iterations = [_iteration(line) if line.strip() else -1 for line in lines]
    kept = max((i + 1 for i, it in enumerate(iterations) if it is not None and it <= iteration), default=0)
    dropped = lines[kept:]
    later = [it for it in iterations[:kept] if it is not None and it > iteration]
    if later:  # a file with runs before this one's that went further: they are not this run's to cut
        logger.warning(f"{path}: {len(later)} line(s) after iteration {iteration} come before earlier ones; kept")
    if dropped:
        os.truncate(path, sum(len(line) for line in lines[:kept]))
        logger.info(f"{path}: dropped {len(dropped)} line(s) after iteration {iteration}, which this run writes again")
    return len(dropped)
