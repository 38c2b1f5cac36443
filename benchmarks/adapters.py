"""
One adapter per model (models.py builds them): the same operations, each through that model's
own API and input format: inference, postprocess from fixed head outputs, labelling + losses +
backward from fixed head outputs, a training forward, and backbone + head for FLOP counting.
"""
import contextlib
import math

import torch

from inputs import TRAIN_SIZE, bgr_tensor, rgb_unit_tensor
from models import build_detectron2, build_ours, build_torchvision


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


def build_adapters(device):
    """All three models; ours gets Detectron2's weights from the same process."""
    detectron2 = Detectron2Adapter(device)
    return {
        "ours": OursAdapter(device, detectron2.model.state_dict()),
        "detectron2": detectron2,
        "torchvision": TorchvisionAdapter(device),
    }
