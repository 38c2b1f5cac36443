"""
Speed, memory and FLOP comparison of three RetinaNet R50-FPN implementations on one machine:

  ours         retina_plugin's RetinaNetPlugin (configs/Base-RetinaNetPlugin.yaml, depth 50)
  detectron2   Detectron2's built-in RetinaNet, holding the same weights as ours
  torchvision  torchvision's RetinaNet R50-FPN (v1), random weights

    python benchmarks/bench.py [--device cpu|cuda] [--threads N] [--repeats 5] [--quick]
                               [--out benchmarks/results]

Each measurement runs in fresh subprocesses of this script (`--worker`): one holding all three
models times them in turns; one per model measures its peak memory alone. All use the same
seed, hence the same weights and images. benchmarks/README.md says what each row means.
"""
import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("ours", "detectron2", "torchvision")
MEASUREMENTS = ("inference", "inference_bf16", "inference_int8", "postprocess", "train_step", "loss_backward")
# Measured for ours only: the peers have no int8 mode (their float32 time is the comparison).
OURS_ONLY = ("inference_int8",)
TITLES = {
    "inference": "inference, 1 image 800x1216",
    "inference_bf16": "inference in bfloat16, 1 image 800x1216",
    "inference_int8": "inference in int8 (ours only), 1 image 800x1216",
    "postprocess": "postprocess only (head outputs -> detections)",
    "train_step": "training step, batch 2 x 640x853",
    "loss_backward": "labelling + losses + backward, batch 2",
}

SEED = 0
INFER_SIZE = (800, 1216)  # (h, w); divisible by 32, so no model pads or resizes it
TRAIN_SIZE = (640, 853)  # padded to 640x864 by all three models
TRAIN_BATCH = 2
GT_PER_IMAGE = 8
NUM_CLASSES = {"detectron2": 80, "torchvision": 91}  # COCO: 80 classes; torchvision's 91 ids
SCORE_THRESH = 0.05
DETECTIONS_PER_IMAGE = 100
# Random weights give an almost constant classifier output (bias -log(99): no detections).
# The head's last convs get new random weights scaled to the actual size of their inputs
# (measured on a small calibration image), so that logits ~ N(CLS_BIAS, CLS_LOGIT_STD^2) vary
# with the image and thousands of scores per image pass 0.05: the postprocessor (threshold,
# top-k, NMS) does realistic work. Box deltas get std BOX_DELTA_STD.
CLS_BIAS = -6.0
CLS_LOGIT_STD = 1.0
BOX_DELTA_STD = 0.2
CALIBRATION_SIZE = (256, 384)
TRAIN_LR = 1e-3
WARMUP = {"inference": 1, "inference_bf16": 1, "inference_int8": 1, "postprocess": 2, "train_step": 1, "loss_backward": 2}
INT8_CALIBRATION_SEEDS = (SEED + 2000, SEED + 2001)  # two 800x1216 images, not the timed one


# ------------------------------------------------------------------------------ inputs


def synthetic_image(height, width, seed, num_shapes=16):
    """
    A natural-ish RGB image: a smooth random background, `num_shapes` shaded rectangles and
    ellipses, mild noise. Returns (H, W, 3) uint8 and the shapes' (num_shapes, 4) XYXY boxes,
    drawn in order (the last ones are on top).
    """
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(1, 3, 5, 7)).astype(np.float32))
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    image = image[0].permute(1, 2, 0).numpy().copy()
    boxes = []
    for i in range(num_shapes):
        w, h = rng.uniform(0.05, 0.35) * width, rng.uniform(0.05, 0.35) * height
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        xs, ys = int(x0), int(y0)
        xe, ye = int(math.ceil(x0 + w)), int(math.ceil(y0 + h))
        yy, xx = np.mgrid[ys:ye, xs:xe].astype(np.float32)
        u, v = (xx - x0) / w, (yy - y0) / h  # 0..1 inside the box
        inside = np.ones_like(u, dtype=bool) if i % 2 else (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
        colour = rng.uniform(0, 255, 3) + 50 * (u[..., None] - 0.5) * rng.uniform(-1, 1, 3)
        image[ys:ye, xs:xe][inside] = colour[inside]
        boxes.append([x0, y0, x0 + w, y0 + h])
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, dtype=np.float32)


def inference_sample():
    image, _ = synthetic_image(*INFER_SIZE, seed=SEED)
    return image


def training_samples():
    """TRAIN_BATCH (image, gt boxes, gt classes 0..79): the top GT_PER_IMAGE shapes of each."""
    samples = []
    for i in range(TRAIN_BATCH):
        image, boxes = synthetic_image(*TRAIN_SIZE, seed=SEED + 1 + i)
        classes = np.random.default_rng(SEED + 100 + i).integers(0, NUM_CLASSES["detectron2"], GT_PER_IMAGE)
        samples.append((image, boxes[-GT_PER_IMAGE:], classes))
    return samples


def bgr_tensor(image, device):
    """Detectron2's input: (3, H, W) float BGR in 0..255."""
    return torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float().to(device)


def rgb_unit_tensor(image, device):
    """torchvision's input: (3, H, W) float RGB in 0..1."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device)


# ------------------------------------------------------------------------------ models


def detectron2_cfgs(device):
    """
    (reference cfg, ours cfg): one config (configs/retinanet_R50.yaml, random weights) read by
    Detectron2's RetinaNet with its own backbone and anchor generator, and by RetinaNetPlugin.
    """
    from retina_plugin import load_config

    ours = load_config(str(ROOT / "configs" / "retinanet_R50.yaml"), [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", device,
        "MODEL.RETINANET.NUM_CLASSES", NUM_CLASSES["detectron2"],
        "TEST.DETECTIONS_PER_IMAGE", DETECTIONS_PER_IMAGE,
    ])
    ref = ours.clone()
    ref.MODEL.META_ARCHITECTURE = "RetinaNet"
    ref.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    ref.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    return ref, ours


def perturb_head(cls_score, bbox_pred, cls_input, box_input, seed):
    """
    New random weights for the classifier and box convs of the head (see CLS_BIAS), given
    their input features (lists of per-level tensors) on a calibration image.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv, inputs, std in ((cls_score, cls_input, CLS_LOGIT_STD), (bbox_pred, box_input, BOX_DELTA_STD)):
            rms = torch.cat([x.flatten() for x in inputs]).pow(2).mean().sqrt().item()
            scale = std / (rms * conv.weight[0].numel() ** 0.5)
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * scale)
            conv.bias.zero_()
        cls_score.bias.fill_(CLS_BIAS)


def calibration_image():
    image, _ = synthetic_image(*CALIBRATION_SIZE, seed=SEED + 1000)
    return image


def build_detectron2(device):
    from detectron2.modeling import build_model

    ref_cfg, _ = detectron2_cfgs(device)
    torch.manual_seed(SEED)
    model = build_model(ref_cfg).eval()
    image = calibration_image()
    with torch.no_grad():
        images = model.preprocess_image([{"image": bgr_tensor(image, device)}])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        cls_input = [model.head.cls_subnet(x) for x in features]
        box_input = [model.head.bbox_subnet(x) for x in features]
    perturb_head(model.head.cls_score, model.head.bbox_pred, cls_input, box_input, SEED)
    return model


def build_ours(device, state_dict=None):
    """RetinaNetPlugin holding the (perturbed) weights of `build_detectron2` (or `state_dict`, its)."""
    import retina_plugin  # noqa: F401  (registers the plugin)
    from detectron2.modeling import build_model

    _, ours_cfg = detectron2_cfgs(device)
    if state_dict is None:
        state_dict = build_detectron2(device).state_dict()
    torch.manual_seed(SEED + 1)
    model = build_model(ours_cfg)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def build_torchvision(device):
    """
    torchvision's retinanet_resnet50_fpn (v1) with random weights, assembled as that builder
    does when given a pretrained backbone: FrozenBatchNorm and stem + layer1 frozen, like
    Detectron2's FREEZE_AT 2 (with weights_backbone=None it would use trainable BatchNorm and
    train every layer). The transform leaves 800x1216 (eval) and 640x853 (train) unresized.
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(SEED)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=None,
        norm_layer=FrozenBatchNorm2d,
        trainable_layers=3,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    model = RetinaNet(
        backbone,
        num_classes=NUM_CLASSES["torchvision"],
        min_size=min(INFER_SIZE),
        max_size=1333,
        score_thresh=SCORE_THRESH,
        detections_per_img=DETECTIONS_PER_IMAGE,
    )
    model = model.to(device).eval()
    head = model.head
    with torch.no_grad():
        images, _ = model.transform([rgb_unit_tensor(calibration_image(), device)])
        features = list(model.backbone(images.tensors).values())
        cls_input = [head.classification_head.conv(x) for x in features]
        box_input = [head.regression_head.conv(x) for x in features]
    perturb_head(head.classification_head.cls_logits, head.regression_head.bbox_reg, cls_input, box_input, SEED)
    return model


# ------------------------------------------------------------------------------ adapters
# One per implementation: the same operations, each in that implementation's own API.


class Detectron2Adapter:
    """Detectron2's RetinaNet through its public methods (forward_inference, label_anchors, losses)."""

    name = "detectron2"

    def __init__(self, device):
        self.device = device
        self.model = build_detectron2(device)

    def storage(self):
        from detectron2.utils.events import EventStorage

        return EventStorage()

    def inference_batch(self, image):
        h, w = image.shape[:2]
        return [{"image": bgr_tensor(image, self.device), "height": h, "width": w}]

    def training_batch(self, samples):
        from detectron2.structures import Boxes, Instances

        batch = []
        for image, boxes, classes in samples:
            instances = Instances(image.shape[:2])
            instances.gt_boxes = Boxes(torch.from_numpy(boxes).to(self.device))
            instances.gt_classes = torch.from_numpy(classes).long().to(self.device)
            batch.append({"image": bgr_tensor(image, self.device), "instances": instances})
        return batch

    def infer(self, batch):
        return self.model(batch)

    def detections(self, outputs):
        instances = outputs[0]["instances"]
        return {
            "boxes": instances.pred_boxes.tensor.tolist(),
            "scores": instances.scores.tolist(),
            "classes": instances.pred_classes.tolist(),
        }

    def train_losses(self, batch):
        return self.model(batch)

    def features(self, batch):
        """Preprocessed ImageList and the head's input features."""
        images = self.model.preprocess_image(batch)
        features = self.model.backbone(images.tensor)
        return images, [features[f] for f in self.model.head_in_features]

    def network(self):
        """backbone + head on a preprocessed image tensor, for FLOP counting."""
        return _Network(self.model.backbone, self.model.head_in_features, self.model.head)

    # postprocess: head outputs -> Instances at the original size
    def prepare_postprocess(self, batch):
        images, features = self.features(batch)
        predictions = self.model.head(features)
        logits = [p.flatten(1) for p in predictions[0]]
        return {"batch": batch, "images": images, "features": features, "predictions": predictions, "logits": logits}

    def postprocess(self, state):
        from detectron2.modeling.postprocessing import detector_postprocess

        results = self.model.forward_inference(state["images"], state["features"], state["predictions"])
        return [detector_postprocess(r, x["height"], x["width"]) for r, x in zip(results, state["batch"])]

    # labelling + losses + backward, from head outputs in per-anchor rows (N, Hi*Wi*A, K or 4)
    def prepare_losses(self, batch):
        from detectron2.modeling.meta_arch.retinanet import permute_to_N_HWA_K

        images, features = self.features(batch)
        logits, deltas = self.model.head(features)
        return {
            "anchors": self.model.anchor_generator(features),
            "gt_instances": [x["instances"] for x in batch],
            "logits": [_leaf(permute_to_N_HWA_K(x, self.model.num_classes)) for x in logits],
            "deltas": [_leaf(permute_to_N_HWA_K(x, 4)) for x in deltas],
        }

    def losses_backward(self, state):
        _clear_grads(state["logits"] + state["deltas"])
        gt_labels, gt_boxes = self.model.label_anchors(state["anchors"], state["gt_instances"])
        losses = self.model.losses(state["anchors"], state["logits"], gt_labels, state["deltas"], gt_boxes)
        sum(losses.values()).backward()
        return losses


class OursAdapter(Detectron2Adapter):
    """RetinaNetPlugin: same inputs as Detectron2; its own anchors, head, postprocess, losses."""

    name = "ours"

    def __init__(self, device, state_dict=None):
        self.device = device
        self.model = build_ours(device, state_dict)

    def features(self, batch):
        """As `forward` computes them: in the model's memory format (NHWC when CHANNELS_LAST)."""
        images = self.model.preprocess_image(batch)
        memory_format = getattr(self.model, "memory_format", torch.contiguous_format)
        features = self.model.backbone(images.tensor.contiguous(memory_format=memory_format))
        return images, [features[f] for f in self.model.head_in_features]

    def prepare_postprocess(self, batch):
        from retina_plugin.modeling.anchor_generator import anchor_tensors

        images, features = self.features(batch)
        logits, deltas = self.model.head(features)
        return {
            "anchors": anchor_tensors(self.model.anchor_generator, features),
            "logits": logits,
            "deltas": deltas,
            "image_sizes": images.image_sizes,
            "output_sizes": [(x["height"], x["width"]) for x in batch],
        }

    def postprocess(self, state):
        return self.model.postprocess(
            state["anchors"], state["logits"], state["deltas"], state["image_sizes"], state["output_sizes"]
        )

    def prepare_losses(self, batch):
        from retina_plugin.modeling.anchor_generator import anchor_tensors

        images, features = self.features(batch)
        logits, deltas = self.model.head(features)
        return {
            "anchors": anchor_tensors(self.model.anchor_generator, features),
            "gt_instances": [x["instances"] for x in batch],
            "logits": [_leaf(x) for x in logits],
            "deltas": [_leaf(x) for x in deltas],
        }

    def losses_backward(self, state):
        _clear_grads(state["logits"] + state["deltas"])
        all_anchors = torch.cat(state["anchors"])
        gt_labels, gt_boxes = self.model.label_anchors(all_anchors, state["gt_instances"])
        normalizer = self.model._update_loss_normalizer(gt_labels)
        losses = self.model.head.losses(
            all_anchors, state["logits"], state["deltas"], gt_labels, gt_boxes, normalizer
        )
        sum(losses.values()).backward()
        return losses


class TorchvisionAdapter:
    """torchvision's RetinaNet through its own input format and methods."""

    name = "torchvision"

    def __init__(self, device):
        self.device = device
        self.model = build_torchvision(device)

    def storage(self):
        return contextlib.nullcontext()

    def inference_batch(self, image):
        return [rgb_unit_tensor(image, self.device)]

    def training_batch(self, samples):
        # min_size = max_size = 640 / 853 gives a resize scale of exactly 1.
        self.model.transform.min_size = (TRAIN_SIZE[0],)
        self.model.transform.max_size = TRAIN_SIZE[1]
        images = [rgb_unit_tensor(image, self.device) for image, _, _ in samples]
        targets = [
            {
                "boxes": torch.from_numpy(boxes).to(self.device),
                "labels": torch.from_numpy(classes + 1).long().to(self.device),  # id 0 = background
            }
            for _, boxes, classes in samples
        ]
        return images, targets

    def infer(self, images):
        return self.model(images)

    def detections(self, outputs):
        return {k: outputs[0][k].tolist() for k in ("boxes", "scores", "labels")}

    def train_losses(self, batch):
        images, targets = batch
        return self.model(images, targets)

    def transformed(self, images, targets=None):
        image_list, targets = self.model.transform(images, targets)
        expected = (math.ceil(images[0].shape[-2] / 32) * 32, math.ceil(images[0].shape[-1] / 32) * 32)
        assert tuple(image_list.tensors.shape[-2:]) == expected, "torchvision resized the input"
        return image_list, targets

    def features(self, image_list):
        return list(self.model.backbone(image_list.tensors).values())

    def network(self):
        return _Network(self.model.backbone, None, self.model.head)

    def prepare_postprocess(self, images):
        image_list, _ = self.transformed(images)
        features = self.features(image_list)
        head_outputs = self.model.head(features)
        level_sizes = [x.shape[-2] * x.shape[-1] for x in features]
        num_anchors = head_outputs["cls_logits"].shape[1] // sum(level_sizes)
        return {
            "head_outputs": head_outputs,
            "anchors": self.model.anchor_generator(image_list, features),
            "anchors_per_level": [s * num_anchors for s in level_sizes],
            "image_sizes": image_list.image_sizes,
            "original_sizes": [tuple(x.shape[-2:]) for x in images],
            "logits": [head_outputs["cls_logits"]],
        }

    def postprocess(self, state):
        """What RetinaNet.forward does after the head in eval mode."""
        split = state["anchors_per_level"]
        head_outputs = {k: list(v.split(split, dim=1)) for k, v in state["head_outputs"].items()}
        anchors = [list(a.split(split)) for a in state["anchors"]]
        detections = self.model.postprocess_detections(head_outputs, anchors, state["image_sizes"])
        return self.model.transform.postprocess(detections, state["image_sizes"], state["original_sizes"])

    def prepare_losses(self, batch):
        images, targets = batch
        image_list, targets = self.transformed(images, targets)
        features = self.features(image_list)
        head_outputs = self.model.head(features)
        return {
            "targets": targets,
            "anchors": self.model.anchor_generator(image_list, features),
            "head_outputs": {k: _leaf(v) for k, v in head_outputs.items()},
        }

    def losses_backward(self, state):
        _clear_grads(list(state["head_outputs"].values()))
        losses = self.model.compute_loss(state["targets"], state["head_outputs"], state["anchors"])
        sum(losses.values()).backward()
        return losses


ADAPTERS = {"ours": OursAdapter, "detectron2": Detectron2Adapter, "torchvision": TorchvisionAdapter}


class _Network(torch.nn.Module):
    """backbone -> (selected features) -> head, outputs flattened to a tuple (for fvcore's tracer)."""

    def __init__(self, backbone, in_features, head):
        super().__init__()
        self.backbone, self.in_features, self.head = backbone, in_features, head

    def forward(self, x):
        features = self.backbone(x)
        if self.in_features is None:
            features = list(features.values())
        else:
            features = [features[f] for f in self.in_features]
        out = self.head(features)
        if isinstance(out, dict):
            return tuple(out.values())
        return tuple(t for level_list in out for t in level_list)


def _leaf(x):
    return x.detach().clone().requires_grad_(True)


def _clear_grads(tensors):
    for t in tensors:
        t.grad = None


# ------------------------------------------------------------------------------ measuring


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn, repeats, warmup, device):
    """(list of `repeats` wall times in s after `warmup` untimed calls, output of the first call)."""
    first = None
    for i in range(warmup):
        out = fn()
        if i == 0:
            first = out
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, first


def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """
    Peak memory growth inside the `with` block, in MiB. CUDA: max_memory_allocated over
    memory_allocated at entry. CPU (Linux): the process's peak RSS (VmHWM), reset at entry via
    /proc/self/clear_refs, over its RSS at entry.
    """

    def __init__(self, device):
        self.device = device
        self.mib = None
        self.method = None

    def __enter__(self):
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated - memory_allocated at start"
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
                self.base = _proc_status_kib("VmRSS") * 1024
                self.method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS at start"
            except OSError:
                self.base = _proc_status_kib("VmHWM") * 1024
                self.method = "VmHWM growth (HWM not resettable: a lower bound)"
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _proc_status_kib("VmHWM") * 1024
        self.mib = (peak - self.base) / 2**20
        return False


def count_candidates(logits):
    """(anchor, class) scores above SCORE_THRESH, over all levels, per image."""
    threshold = math.log(SCORE_THRESH / (1 - SCORE_THRESH))
    return sum((x > threshold).flatten(1).sum(1) for x in logits).tolist()


def network_gflop(adapter, image_tensor):
    """fvcore's count of multiply-adds of backbone + head, times 2, in GFLOP."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(adapter.network(), (image_tensor,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return 2 * analysis.total() / 1e9


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
    Ours in int8 (retina_plugin.deploy.quantization): calibrated on two other synthetic images of the
    same size, then the timed image. Also reports how the detections compare with float32's.
    """
    from retina_plugin.deploy.quantization import calibrate_int8, quantize_int8

    if not args.device.startswith("cpu"):
        raise RuntimeError("int8 inference runs on the CPU only")
    batch = adapter.inference_batch(inference_sample())
    model = adapter.model.eval()
    calibration = [adapter.inference_batch(synthetic_image(*INFER_SIZE, seed=s)[0]) for s in INT8_CALIBRATION_SEEDS]
    int8_model = quantize_int8(copy.deepcopy(model), calibrate_int8(model, calibration))

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


def build_adapters(device):
    """All three models; ours gets Detectron2's weights from the same process."""
    detectron2 = Detectron2Adapter(device)
    return {
        "ours": OursAdapter(device, detectron2.model.state_dict()),
        "detectron2": detectron2,
        "torchvision": TorchvisionAdapter(device),
    }


def run_timing(tasks, measure, args):
    """
    Warm-up calls of every model, then `args.repeats` rounds of one timed call per model, the
    models' order rotating each round, so that load from other processes is spread over all.
    The first call's output of each model goes to its `report`.
    """
    models = list(tasks)
    first, times = {}, {m: [] for m in models}
    with contextlib.ExitStack() as stack:
        for m in models:
            stack.enter_context(tasks[m].context())
        for m in models:
            first[m] = time_calls(tasks[m].step, 0, WARMUP[measure], args.device)[1]
        for r in range(args.repeats):
            for m in models[r % len(models):] + models[: r % len(models)]:
                times[m] += time_calls(tasks[m].step, 1, 0, args.device)[0]
    return {m: {"times": times[m], **tasks[m].report(first[m])} for m in models}


def run_memory(task, args):
    """Peak memory growth over two calls (the first one allocates lazily-built state, e.g. optimizer momenta)."""
    with task.context(), PeakMemory(args.device) as memory:
        time_calls(task.step, 1, 1, args.device)
    return {"peak_mib": memory.mib, "memory_method": memory.method}


def machine_limit(device, runs=5):
    """
    Best throughput of one 3x3 conv 256->256 on a P3-sized map (1x256x100x152), in GFLOP/s,
    over `runs` calls in each memory layout (NCHW and NHWC: the faster one is the limit).
    """
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(1, 256, INFER_SIZE[0] // 8, INFER_SIZE[1] // 8, generator=g).to(device)
    gflop = 2 * 256 * 256 * 9 * x.shape[-2] * x.shape[-1] / 1e9
    times = {}
    for layout, memory_format in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device, memory_format=memory_format).eval()
        x_layout = x.contiguous(memory_format=memory_format)

        def step():
            with torch.no_grad():
                return conv(x_layout)

        times[layout] = time_calls(step, runs, 2, device)[0]
    best = min(min(t) for t in times.values())
    return {"gflop_per_s": gflop / best, "conv_gflop": gflop, "runs": runs, "times": times}


# ------------------------------------------------------------------------------ worker / driver


def run_worker(args):
    torch.set_num_threads(args.threads)
    if args.mode == "memory":
        adapter = ADAPTERS[args.worker](args.device)
        result = run_memory(TASKS[args.measure](adapter, args), args)
    else:
        adapters = build_adapters(args.device)
        models = ["ours"] if args.measure in OURS_ONLY else MODELS
        tasks = {m: TASKS[args.measure](adapters[m], args) for m in models}
        result = run_timing(tasks, args.measure, args)
    Path(args.worker_out).write_text(json.dumps(result))


def spawn_worker(model, measure, mode, args, tmpdir):
    """
    Run `measure` in a fresh process: mode "time" for all models (`model` "all"),
    mode "memory" for one model.
    """
    out = Path(tmpdir) / f"{model}-{measure}-{mode}.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--worker", model, "--measure", measure, "--mode", mode, "--worker-out", str(out),
        "--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if mode == "memory":
        # A fixed mmap threshold returns every large freed block to the OS at once, so RSS
        # follows the live tensors: without it glibc's adaptive threshold and per-thread
        # arenas make peak RSS vary by ~200 MiB between identical runs. Timing runs keep the
        # default allocator (this setting makes them up to ~40% slower).
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"worker {model}/{measure} failed with exit code {proc.returncode}")
    return json.loads(out.read_text())


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(args):
    import detectron2
    import torchvision

    info = {
        "node": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": args.device,
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2.__version__,
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_name(info):
    def clean(s):
        s = re.sub(r"\((r|tm)\)", "", s.lower())
        return re.sub(r"[^a-z0-9]+", "-", s).strip("-")

    if info["device"].startswith("cuda"):
        return f"{clean(info['gpu'])}_cuda"
    return f"{clean(info['cpu_model'])}_cpu-{info['threads']}t"


def compare_detections(ours, ref):
    """ours vs detectron2 detections (same order: both sorted by score)."""
    same_count = len(ours["scores"]) == len(ref["scores"])
    result = {"count_ours": len(ours["scores"]), "count_detectron2": len(ref["scores"]), "same_count": same_count}
    if same_count and ref["scores"]:
        boxes = np.abs(np.asarray(ours["boxes"]) - np.asarray(ref["boxes"]))
        scores = np.abs(np.asarray(ours["scores"]) - np.asarray(ref["scores"]))
        result.update(
            classes_equal=ours["classes"] == ref["classes"],
            max_box_diff=float(boxes.max()),
            max_score_diff=float(scores.max()),
        )
    result["ok"] = bool(
        same_count
        and result.get("classes_equal", True)
        and result.get("max_score_diff", 0.0) <= 1e-4
        and result.get("max_box_diff", 0.0) <= 1e-2
    )
    return result


def compare_losses(ours, ref):
    """Relative difference |ours - ref| / |ref| per loss."""
    return {k: abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref}


def summarize(results, limit, info, args, wall_s):
    """The JSON report: machine info, raw results, medians, ratios, correctness."""
    summary = {"machine": info, "args": vars(args), "wall_s": wall_s, "machine_limit": limit, "results": results}
    ours_flops = results["ours"]["inference"]["network_gflop"]
    for model in MODELS:
        for measure in results[model]:
            r = results[model][measure]
            r["median_s"], r["min_s"] = statistics.median(r["times"]), min(r["times"])
        inference = results[model]["inference"]
        inference["percent_of_limit"] = 100 * inference["network_gflop"] / inference["median_s"] / limit["gflop_per_s"]
    summary["flops_note"] = (
        "network_gflop = 2 x fvcore multiply-adds of backbone + head at network_input_shape; "
        f"ours = {ours_flops:.1f} GFLOP"
    )
    ours, ref = results["ours"], results["detectron2"]
    summary["correctness"] = {
        "detections": compare_detections(ours["inference"]["detections"], ref["inference"]["detections"]),
        "loss_rel_diff": compare_losses(ours["loss_backward"]["first_losses"], ref["loss_backward"]["first_losses"]),
        "train_step_loss_rel_diff": compare_losses(
            ours["train_step"]["first_losses"], ref["train_step"]["first_losses"]
        ),
    }
    return summary


def _row(title, values, fmt, with_ratios=True):
    """A table row: `values` per model as tuples (None: not measured), the first also gives the ratios."""
    ours = values[0][0]
    ratios = [f"{v[0] / ours:.2f}" if v and ours > 0 else "-" for v in values[1:]] if with_ratios else ["", ""]
    return "| " + " | ".join([title] + [fmt(v) if v else "-" for v in values] + ratios) + " |"


def _seconds(v):
    digits = 4 if v[0] < 0.1 else 3
    return f"{v[0]:.{digits}f} ({v[1]:.{digits}f})"


def result_table(results):
    def per_model(measure, *keys):
        return [tuple(results[m][measure][k] for k in keys) if measure in results[m] else None for m in MODELS]

    lines = [
        "| measurement | " + " | ".join(MODELS) + " | detectron2 / ours | torchvision / ours |",
        "|---|---|---|---|---|---|",
    ]
    for measure in MEASUREMENTS:
        lines.append(_row(f"{TITLES[measure]} (s)", per_model(measure, "median_s", "min_s"), _seconds))
    for measure in MEASUREMENTS:
        lines.append(_row(f"peak memory: {measure} (MiB)", per_model(measure, "peak_mib"), lambda v: f"{v[0]:.0f}"))
    lines.append(
        _row("network GFLOP (backbone + head)", per_model("inference", "network_gflop"), lambda v: f"{v[0]:.1f}")
    )
    lines.append(
        _row(
            "inference, % of machine limit",
            per_model("inference", "percent_of_limit"),
            lambda v: f"{v[0]:.1f}%",
            with_ratios=False,
        )
    )
    return lines


def correctness_line(correctness):
    det = correctness["detections"]
    if det["same_count"]:
        detail = (
            f"classes equal {det.get('classes_equal')}, max |box diff| {det.get('max_box_diff', 0):.2e} px, "
            f"max |score diff| {det.get('max_score_diff', 0):.2e}"
        )
    else:
        detail = "counts differ"

    def rel(d):
        return ", ".join(f"{k} {v:.1e}" for k, v in d.items())

    return (
        f"- **Correctness, ours vs detectron2** ({'OK' if det['ok'] else 'MISMATCH'}): detections: "
        f"{det['count_ours']} vs {det['count_detectron2']}, {detail}; "
        f"labelling+losses rel. diff: {rel(correctness['loss_rel_diff'])}; "
        f"first training step losses rel. diff: {rel(correctness['train_step_loss_rel_diff'])}."
    )


def result_notes(summary):
    results, info, limit = summary["results"], summary["machine"], summary["machine_limit"]
    load = summary["load_average_1min"]
    return [
        f"- Machine limit: {limit['gflop_per_s']:.0f} GFLOP/s (best of {limit['runs']} runs of one 3x3 conv "
        f"256->256 on 1x256x{INFER_SIZE[0] // 8}x{INFER_SIZE[1] // 8}, NCHW or NHWC). GFLOP = 2 x fvcore's "
        "multiply-adds; % of limit = GFLOP / median inference time / limit.",
        "- Network input: " + ", ".join(f"{m} {results[m]['inference']['network_input_shape']}" for m in MODELS) + ".",
        "- Scores above 0.05 per image (postprocess input): "
        + ", ".join(f"{m} {results[m]['postprocess']['candidates_per_image'][0]}" for m in MODELS)
        + ".",
        correctness_line(summary["correctness"]),
        "- bfloat16: ours in bfloat16 vs detectron2 in float32: "
        f"{results['detectron2']['inference']['median_s'] / results['ours']['inference_bf16']['median_s']:.2f}x "
        f"({len(results['ours']['inference_bf16']['detections']['scores'])} detections). Accuracy cost on the "
        "embedded val split: see benchmarks/README.md.",
        "- int8: ours in int8 vs detectron2 in float32: "
        f"{results['detectron2']['inference']['median_s'] / results['ours']['inference_int8']['median_s']:.2f}x, "
        f"vs ours in float32: {results['ours']['inference']['median_s'] / results['ours']['inference_int8']['median_s']:.2f}x; "
        f"{results['ours']['inference_int8']['vs_float32']['matched']} of float32's "
        f"{results['ours']['inference_int8']['vs_float32']['top']} best detections found again (same class, IoU >= 0.9; "
        "random weights are a hard case for quantization). Accuracy cost on the embedded val split: see benchmarks/README.md.",
        f"- Peak memory: {results['ours']['inference']['memory_method']}, over a warm-up and one "
        "measured call, in a separate process per cell.",
        f"- 1-minute load average at start {load['start']:.2f}, at end {load['end']:.2f} "
        f"({info['cpu_count']} CPUs; other processes competing for the cores slow every column).",
    ]


def markdown(summary):
    info = summary["machine"]
    device = info["device"] + (f" ({info['gpu']})" if "gpu" in info else "")
    lines = [
        f"# RetinaNet R50-FPN: ours vs detectron2 vs torchvision ({machine_name(info)})",
        "",
        f"{info['cpu_model']}, device {device}, {info['threads']} threads; torch {info['torch']}, "
        f"torchvision {info['torchvision']}, detectron2 {info['detectron2']}. Median of "
        f"{summary['args']['repeats']} runs (min in parentheses); the run took {summary['wall_s']:.0f} s.",
        "",
        *result_table(summary["results"]),
        "",
        *result_notes(summary),
    ]
    return "\n".join(lines) + "\n"


def run_driver(args):
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    info = machine_info(args)
    load_at_start = os.getloadavg()
    print(f"{machine_name(info)}: {info['cpu_model']}, {args.threads} threads, repeats {args.repeats}", flush=True)
    limit = machine_limit(args.device)
    print(f"machine limit: {limit['gflop_per_s']:.0f} GFLOP/s", flush=True)

    results = {m: {} for m in MODELS}
    with tempfile.TemporaryDirectory() as tmpdir:
        for measure in MEASUREMENTS:
            timings = spawn_worker("all", measure, "time", args, tmpdir)
            for model in timings:
                r = results[model][measure] = timings[model]
                r.update(spawn_worker(model, measure, "memory", args, tmpdir))
                print(
                    f"  {measure:14s} {model:12s} median {statistics.median(r['times']):.4f} s, "
                    f"min {min(r['times']):.4f} s, peak {r['peak_mib']:.0f} MiB",
                    flush=True,
                )

    summary = summarize(results, limit, info, args, time.perf_counter() - start)
    summary["load_average_1min"] = {"start": load_at_start[0], "end": os.getloadavg()[0]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = machine_name(info)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown(summary)
    (out / f"{name}.md").write_text(table)
    print()
    print(table)
    print(f"wrote {out / name}.json and .md")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="2 repeats (for development)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--worker", choices=MODELS + ("all",), help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    return args


def main():
    args = parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
