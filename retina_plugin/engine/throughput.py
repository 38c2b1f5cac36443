"""
Throughput of an evaluation, end to end: `TimedInference` wraps the model that Detectron2's
`inference_on_dataset` runs and records every forward call, so that after the evaluation the
trainer reports images per second over the whole test set beside the model's own rate. Their
ratio says how much of the loop the model is: the rest is data loading (reading, decoding,
resizing, unless loader workers prefetch it) and the evaluator's per-batch work.

The loop's time is from the start of the first forward call to the end of the last one; the
first batch's loading and the evaluator's final COCOeval are outside it.
"""
import json
import logging
import os
import time
from typing import Dict, List, Optional

from torch import nn

__all__ = ["TimedInference", "DATA_LOADING_TARGET"]

logger = logging.getLogger(__name__)

# The model's share of the evaluation loop this project aims for: data loading must not be
# what limits the images per second.
DATA_LOADING_TARGET = 0.9


class TimedInference(nn.Module):
    """A transparent wrapper of a model taking Detectron2's inputs, timing each forward call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # Start in the model's mode: inference_on_dataset restores the mode it found.
        self.train(model.training)
        self.calls: List[tuple] = []  # (start, end, images) per forward call, perf_counter seconds

    def forward(self, batched_inputs):
        start = time.perf_counter()
        outputs = self.model(batched_inputs)
        self.calls.append((start, time.perf_counter(), len(batched_inputs)))
        return outputs

    def summary(self) -> Optional[Dict[str, float]]:
        """images, loop_seconds, model_seconds, images_per_second, model_images_per_second, model_share."""
        if not self.calls:
            return None
        images = sum(n for _, _, n in self.calls)
        loop = self.calls[-1][1] - self.calls[0][0]
        model = sum(end - start for start, end, _ in self.calls)
        return {
            "images": images,
            "loop_seconds": loop,
            "model_seconds": model,
            "images_per_second": images / loop,
            "model_images_per_second": images / model,
            "model_share": model / loop,
        }

    def report(self, datasets, output_dir: Optional[str] = None) -> Optional[Dict[str, float]]:
        """Log the summary (and write it to output_dir/throughput.json); returns it."""
        summary = self.summary()
        if summary is None:
            return None
        s = summary
        logger.info(
            f"Evaluation throughput on {', '.join(datasets)}: {s['images']} images in {s['loop_seconds']:.2f} s, "
            f"{s['images_per_second']:.2f} images/s; the model alone {s['model_images_per_second']:.2f} images/s "
            f"({s['model_share']:.1%} of the loop; target >= {DATA_LOADING_TARGET:.0%}: "
            f"{'met' if s['model_share'] >= DATA_LOADING_TARGET else 'not met, data loading limits it'})"
        )
        if output_dir:
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, "throughput.json"), "w") as f:
                json.dump({"datasets": list(datasets), **s}, f, indent=1)
        return summary
