"""
The six measurements (MEASUREMENTS), each set up on one adapter as a `Task`: the call to time
(`step`) and what to report about its first output (detections, FLOPs, losses).
"""
import contextlib
import math

import torch

from adapters import TorchvisionAdapter
from inputs import INFER_SIZE, SCORE_THRESH, SEED, inference_sample, training_samples
from measure import network_gflop
from models import calibrated_int8

MEASUREMENTS = ("inference", "inference_bf16", "inference_int8", "postprocess", "train_step", "loss_backward")
# Measured for ours only: the peers have no int8 mode (their float32 time is the comparison).
OURS_ONLY = ("inference_int8",)
TRAIN_LR = 1e-3
WARMUP = {"inference": 1, "inference_bf16": 1, "inference_int8": 1, "postprocess": 2, "train_step": 1, "loss_backward": 2}
INT8_CALIBRATION_SEEDS = (SEED + 2000, SEED + 2001)  # two 800x1216 images, not the timed one


def count_candidates(logits):
    """(anchor, class) scores above SCORE_THRESH, over all levels, per image."""
    threshold = math.log(SCORE_THRESH / (1 - SCORE_THRESH))
    return sum((x > threshold).flatten(1).sum(1) for x in logits).tolist()


def network_input(adapter, batch):
    """The normalized, padded image tensor the backbone sees."""
    if isinstance(adapter, TorchvisionAdapter):
        return adapter.transformed(batch)[0].tensors
    return adapter.model.preprocess_image(batch).tensor


class Task:
    """One measurement, set up: `step()` is the timed call; `report(first output)` adds facts."""

    def __init__(self, step, report=None, context=contextlib.nullcontext):
        self.step = step
        self.report = report or (lambda first: {})
        self.context = context


def inference_task(adapter, args):
    batch = adapter.inference_batch(inference_sample())
    adapter.model.eval()

    def step():
        with torch.no_grad():
            return adapter.infer(batch)

    def report(first):
        with torch.no_grad():
            image_tensor = network_input(adapter, batch)
        return {
            "detections": adapter.detections(first),
            "network_input_shape": list(image_tensor.shape),
            "network_gflop": network_gflop(adapter, image_tensor),
        }

    return Task(step, report)


def inference_bf16_task(adapter, args):
    """
    Each model's bfloat16 inference: ours through its opt-in MODEL.RETINA_PLUGIN.INFERENCE_DTYPE
    (autocast over backbone and head, float32 decoding), the peers under torch.autocast.
    """
    batch = adapter.inference_batch(inference_sample())
    adapter.model.eval()
    device_type = torch.device(args.device).type
    ours = hasattr(adapter.model, "inference_dtype")

    def step():
        with torch.no_grad():
            if ours:
                adapter.model.inference_dtype = "bfloat16"
                try:
                    return adapter.infer(batch)
                finally:
                    adapter.model.inference_dtype = "float32"
            with torch.autocast(device_type, dtype=torch.bfloat16):
                return adapter.infer(batch)

    return Task(step, lambda first: {"detections": adapter.detections(first)})


def inference_int8_task(adapter, args):
    """
    Ours in int8 (retina_plugin.inference.int8): calibrated on two other synthetic images of the
    same size, then the timed image. Also reports how the detections compare with float32's.
    """
    if not args.device.startswith("cpu"):
        raise RuntimeError("int8 inference runs on the CPU only")
    batch = adapter.inference_batch(inference_sample())
    model = adapter.model.eval()
    int8_model = calibrated_int8(model, *INFER_SIZE, INT8_CALIBRATION_SEEDS, args.device)

    def step():
        with torch.no_grad():
            return int8_model(batch)

    def report(first):
        with torch.no_grad():
            reference = adapter.detections(model(batch))
        return {"detections": adapter.detections(first), "vs_float32": compare_int8_detections(adapter.detections(first), reference)}

    return Task(step, report)


def compare_int8_detections(int8, reference, top=20):
    """How many of float32's `top` best detections int8 also finds (same class, IoU >= 0.9)."""
    from detectron2.structures import Boxes, pairwise_iou

    n = min(top, len(reference["scores"]))
    if n == 0 or not int8["scores"]:
        return {"top": n, "matched": 0}
    iou = pairwise_iou(Boxes(torch.tensor(reference["boxes"][:n])), Boxes(torch.tensor(int8["boxes"])))
    same_class = torch.tensor(reference["classes"][:n])[:, None] == torch.tensor(int8["classes"])[None]
    return {"top": n, "matched": int(((iou >= 0.9) & same_class).any(1).sum())}


def postprocess_task(adapter, args):
    batch = adapter.inference_batch(inference_sample())
    adapter.model.eval()
    with torch.no_grad():
        state = adapter.prepare_postprocess(batch)
    before = [x.clone() for x in state["logits"]]

    def step():
        with torch.no_grad():
            return adapter.postprocess(state)

    def report(first):
        if not all(torch.equal(a, b) for a, b in zip(before, state["logits"])):
            raise RuntimeError(f"{adapter.name}: postprocess modified its input head outputs")
        return {"candidates_per_image": count_candidates(state["logits"])}

    return Task(step, report)


def train_step_task(adapter, args):
    batch = adapter.training_batch(training_samples())
    model = adapter.model.train()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=TRAIN_LR, momentum=0.9, weight_decay=1e-4
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        losses = adapter.train_losses(batch)
        sum(losses.values()).backward()
        optimizer.step()
        return {k: v.item() for k, v in losses.items()}

    return Task(step, lambda first: {"first_losses": first}, adapter.storage)


def loss_backward_task(adapter, args):
    batch = adapter.training_batch(training_samples())
    adapter.model.train()
    with torch.no_grad():
        state = adapter.prepare_losses(batch)

    def step():
        return {k: v.item() for k, v in adapter.losses_backward(state).items()}

    return Task(step, lambda first: {"first_losses": first}, adapter.storage)


TASKS = {
    "inference": inference_task,
    "inference_bf16": inference_bf16_task,
    "inference_int8": inference_int8_task,
    "postprocess": postprocess_task,
    "train_step": train_step_task,
    "loss_backward": loss_backward_task,
}
