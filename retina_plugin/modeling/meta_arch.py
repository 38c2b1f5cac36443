"""RetinaNetPlugin: the one-stage detector of Lin et al. 2017 as a Detectron2 meta-architecture."""
from typing import Dict, List

import numpy as np
import torch
from torch import nn
from detectron2.config import configurable
from detectron2.data.detection_utils import convert_image_to_rgb
from detectron2.layers import move_device_like
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_anchor_generator, build_backbone
from detectron2.modeling.matcher import Matcher
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage

from .anchor_generator import anchor_tensors
from .head import build_retina_head
from .matching import build_anchor_matcher, label_anchors
from .postprocess import build_retina_postprocess
from .winograd import use_winograd

VALID_INFERENCE_DTYPES = ("float32", "bfloat16", "float16", "int8")
# The inference dtypes run under torch.autocast; "int8" swaps the convolutions instead
# (retina_plugin.inference.int8.quantize_int8).
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@META_ARCH_REGISTRY.register()
class RetinaNetPlugin(nn.Module):
    """
    Backbone (ResNet-FPN, P3-P7) -> focal-loss head on every level -> in training, anchor
    matching and the head's losses; in inference, the postprocessor.

    Takes and returns Detectron2's standard model inputs and outputs, so Detectron2's trainer,
    evaluators, predictor and checkpointer use it unchanged; its state_dict has the keys of
    Detectron2's `RetinaNet`, whose checkpoints therefore load into it.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        postprocess,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        num_classes: int,
        head_in_features: List[str],
        pixel_mean,
        pixel_std,
        loss_normalizer_momentum: float = 0.9,
        loss_normalizer_init: float = 100.0,
        input_format: str = "BGR",
        channels_last: bool = False,
        inference_dtype: str = "float32",
        compile_inference: bool = False,
        winograd=False,
        vis_period: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.postprocess = postprocess
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.num_classes = num_classes
        self.head_in_features = head_in_features
        self.loss_normalizer_momentum = loss_normalizer_momentum
        self.loss_normalizer = loss_normalizer_init
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if inference_dtype not in VALID_INFERENCE_DTYPES:
            raise ValueError(f"inference_dtype {inference_dtype!r} is not one of {VALID_INFERENCE_DTYPES}")
        self.inference_dtype = inference_dtype
        self.int8 = False  # True once retina_plugin.inference.int8.quantize_int8 has swapped the convolutions
        self.compile_inference = compile_inference
        self._compiled = None  # (backbone, head) compiled at the first eval forward; a tuple, so not submodules
        self.vis_period = vis_period
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if winograd:
            # CPU float32 inference: 3x3 convolutions where winograd.applies, by Winograd F(4x4, 3x3)
            # where measured faster on this machine ("auto") or by the static rules (True).
            use_winograd(self, winograd)
        if channels_last:
            # The CPU (oneDNN) and cuDNN convolution kernels work in NHWC; NCHW weights and
            # activations are reordered on every call. NHWC also makes the head's
            # (N, A*K, H, W) -> (N, H*W*A, K) reshape free.
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        # The config was checked when it was loaded (retina_plugin.config.load_config).
        retinanet = cfg.MODEL.RETINANET
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in retinanet.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(
                f"cfg.MODEL.RETINANET.IN_FEATURES = {list(retinanet.IN_FEATURES)}: the backbone "
                f"{cfg.MODEL.BACKBONE.NAME} has no {missing}; it outputs {sorted(shapes)}"
            )
        feature_shapes = [shapes[f] for f in retinanet.IN_FEATURES]
        anchor_generator = build_anchor_generator(cfg, feature_shapes)
        num_anchors = set(anchor_generator.num_cell_anchors)
        if len(num_anchors) != 1:
            raise ValueError(
                f"cfg.MODEL.ANCHOR_GENERATOR ({cfg.MODEL.ANCHOR_GENERATOR.NAME}) gives "
                f"{anchor_generator.num_cell_anchors} anchors per level; the head shares its weights "
                "across levels, so every level needs the same number"
            )
        node = cfg.MODEL.RETINA_PLUGIN
        return {
            "backbone": backbone,
            "head": build_retina_head(cfg, feature_shapes, num_anchors.pop()),
            "postprocess": build_retina_postprocess(cfg),
            "anchor_generator": anchor_generator,
            "anchor_matcher": build_anchor_matcher(cfg),
            "num_classes": retinanet.NUM_CLASSES,
            "head_in_features": list(retinanet.IN_FEATURES),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "loss_normalizer_momentum": node.LOSS_NORMALIZER_MOMENTUM,
            "loss_normalizer_init": node.LOSS_NORMALIZER_INIT,
            "input_format": cfg.INPUT.FORMAT,
            "channels_last": node.CHANNELS_LAST,
            "inference_dtype": node.INFERENCE_DTYPE,
            "compile_inference": node.COMPILE,
            "winograd": node.WINOGRAD,
            "vis_period": cfg.VIS_PERIOD,
        }

    def inference_modules(self):
        """
        The backbone and head an eval forward runs. With `compile_inference`, `torch.compile`d
        ones (inductor with freezing: the weights become constants, so oneDNN prepacks them and
        fuses conv + ReLU + residual add), compiled at the first call for the weights of that
        moment; `train()` drops them, so evaluation during training compiles the new weights.
        A trace (export) gets the eager ones.
        """
        if not self.compile_inference or torch.jit.is_tracing():
            return self.backbone, self.head
        if self._compiled is None:
            self._compiled = tuple(torch.compile(m, options={"freezing": True}) for m in (self.backbone, self.head))
        return self._compiled

    def train(self, mode: bool = True):
        if mode:
            self._compiled = None
        return super().train(mode)

    def __getstate__(self):
        # copy.deepcopy and pickling leave the compiled modules out: they wrap this model's
        # own backbone and head, not the copy's. The copy compiles its own when it runs.
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalize, pad and batch the (C, H, W) images of `batched_inputs`."""
        images = [move_device_like(x["image"], self.pixel_mean) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(
            images, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """
        Args:
            batched_inputs: Detectron2's model input: per image a dict with "image" (C, H, W)
                and, in training, "instances" (gt_boxes, gt_classes); optional "height",
                "width" give the output size in inference.
        Returns:
            training: {"loss_cls", "loss_box_reg"}; inference: per image {"instances": Instances}.
        """
        images = self.preprocess_image(batched_inputs)
        if not self.training and self.inference_dtype == "int8" and not self.int8:
            raise RuntimeError(
                "INFERENCE_DTYPE is int8 but this model's convolutions are float32: get it ready with "
                "retina_plugin.inference.model.load_model(cfg) (every tool does), which quantizes it with INT8_CALIBRATION"
            )
        autocast_dtype = None if self.training else AUTOCAST_DTYPES.get(self.inference_dtype)
        low_precision = autocast_dtype is not None
        backbone, head = (self.backbone, self.head) if self.training else self.inference_modules()
        with torch.autocast(self.device.type, dtype=autocast_dtype or torch.float32, enabled=low_precision):
            features = backbone(images.tensor.contiguous(memory_format=self.memory_format))
            features = [features[f] for f in self.head_in_features]
            pred_logits, pred_anchor_deltas = head(features)
        if low_precision:  # decode and NMS in float32
            pred_logits = [x.float() for x in pred_logits]
            pred_anchor_deltas = [x.float() for x in pred_anchor_deltas]
        anchors = anchor_tensors(self.anchor_generator, features)

        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError("RetinaNetPlugin in training mode needs 'instances' in every input")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            all_anchors = torch.cat(anchors)
            gt_labels, gt_boxes = self.label_anchors(all_anchors, gt_instances)
            normalizer = self._update_loss_normalizer(gt_labels)
            losses = self.head.losses(all_anchors, pred_logits, pred_anchor_deltas, gt_labels, gt_boxes, normalizer)
            if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
                with torch.no_grad():
                    first = [images.image_sizes[0]]
                    (result,) = self.postprocess(
                        anchors, [x[:1].detach() for x in pred_logits], [x[:1].detach() for x in pred_anchor_deltas], first, first
                    )
                self.visualize_training(batched_inputs[0], result)
            return losses

        output_sizes = [
            (x.get("height", size[0]), x.get("width", size[1]))
            for x, size in zip(batched_inputs, images.image_sizes)
        ]
        results = self.postprocess(anchors, pred_logits, pred_anchor_deltas, images.image_sizes, output_sizes)
        return [{"instances": r} for r in results]

    def visualize_training(self, inputs: Dict, result: Instances, max_boxes: int = 20):
        """
        Put one picture in the event storage, as Detectron2's RetinaNet does every VIS_PERIOD
        iterations: the training image with its ground-truth boxes on top and the model's
        `max_boxes` best detections below (both in the network input's pixels).
        """
        from detectron2.utils.visualizer import Visualizer

        image = convert_image_to_rgb(inputs["image"].permute(1, 2, 0), self.input_format)
        gt = Visualizer(image, None).overlay_instances(boxes=inputs["instances"].gt_boxes.to("cpu")).get_image()
        boxes = result.pred_boxes.tensor[:max_boxes].cpu().numpy()
        predicted = Visualizer(image, None).overlay_instances(boxes=boxes).get_image()
        get_event_storage().put_image(
            f"Top: GT bounding boxes; Bottom: {max_boxes} Highest Scoring Results",
            np.vstack((gt, predicted)).transpose(2, 0, 1),
        )

    def label_anchors(self, anchors: torch.Tensor, gt_instances: List[Instances]):
        """`retina_plugin.modeling.matching.label_anchors` with this model's matcher and classes."""
        return label_anchors(anchors, gt_instances, self.anchor_matcher, self.num_classes)

    def _update_loss_normalizer(self, gt_labels: torch.Tensor) -> float:
        num_images = gt_labels.shape[0]
        num_foreground = ((gt_labels >= 0) & (gt_labels != self.num_classes)).sum().item()
        try:
            get_event_storage().put_scalar("num_pos_anchors", num_foreground / num_images)
        except AssertionError:  # called outside a trainer: nothing records scalars
            pass
        m = self.loss_normalizer_momentum
        self.loss_normalizer = m * self.loss_normalizer + (1 - m) * max(num_foreground, 1)
        return self.loss_normalizer

