"""
Detections drawn on images and video frames, as Detectron2's `demo/predictor.py`
(VisualizationDemo) draws them: `RetinaPredictor` (or `TiledPredictor` when
MODEL.RETINA_PLUGIN.TILE_SIZE > 0) and Detectron2's `Visualizer` / `VideoVisualizer`.
An image too dense for its labels (`dense_drawing.labels_fit`) gets its boxes in one colour
per class, without text, at its own size. Rotated boxes ((N, 5) `RotatedBoxes`) are drawn by the
same calls: Visualizer's `overlay_instances` draws (N, 5) boxes as rotated rectangles.
"""
import logging
from typing import Iterator, Tuple

import cv2
import numpy as np
import torch
from detectron2.structures import BoxMode, Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

from .dense_drawing import labels_fit
from .predictor import RetinaPredictor, TiledPredictor, dataset_metadata

__all__ = ["DetectionVisualizer", "RotatedBoxVideoVisualizer", "draw_detections"]

logger = logging.getLogger(__name__)


def _label_font_sizes(boxes: np.ndarray, height: int, width: int, default: float) -> np.ndarray:
    """
    (N,) the font size Visualizer.overlay_instances gives the label of each XYXY box (N, 4), or
    of each rotated XYWHA box (N, 5) (draw_rotated_box_with_label: by the box's own height h).
    """
    box_heights = boxes[:, 3] if boxes.shape[1] == 5 else boxes[:, 3] - boxes[:, 1]
    height_ratio = box_heights / np.sqrt(height * width)
    return np.clip((height_ratio - 0.02) / 0.08 + 1, 1.2, 2) * 0.5 * default


def draw_detections(rgb: np.ndarray, instances: Instances, metadata, instance_mode: ColorMode = ColorMode.IMAGE) -> VisImage:
    """
    Args:
        rgb (np.ndarray): (H, W, 3) uint8 RGB image; instances: its detections (pred_boxes:
            Boxes (N, 4) or RotatedBoxes (N, 5), scores, pred_classes), on the CPU; metadata:
            thing_classes (and thing_colors).

    Returns:
        VisImage (H, W): Detectron2's `draw_instance_predictions` while the labels fit
        (`labels_fit`, at the font sizes Visualizer gives them); above that density, the boxes
        without labels, one colour per class (thing_colors, or else Detectron2's colormap),
        the key of colours logged. The picture keeps the image's size, as Detectron2's demo.
    """
    visualizer = Visualizer(rgb, metadata, instance_mode=instance_mode)
    h, w = rgb.shape[:2]
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else np.zeros((0, 4))
    classes = instances.pred_classes.numpy() if instances.has("pred_classes") else np.zeros(len(boxes), np.int64)
    names = metadata.get("thing_classes", None) or [str(c) for c in range(int(classes.max(initial=-1)) + 1)]
    scores = instances.scores.numpy() if instances.has("scores") else np.ones(len(boxes))
    labels = [f"{names[c]} {s * 100:.0f}%" for c, s in zip(classes, scores)]  # Detectron2's labels
    if labels_fit(labels, _label_font_sizes(boxes, h, w, visualizer._default_font_size), h, w):
        return visualizer.draw_instance_predictions(predictions=instances)
    thing_colors = metadata.get("thing_colors", None)
    palette = np.array(thing_colors, np.float64) / 255 if thing_colors else colormap(rgb=True, maximum=1)
    colours = [tuple(palette[c % len(palette)]) for c in range(len(names))]
    counts = np.bincount(classes, minlength=len(names))
    key = ", ".join(f"{names[c]} {counts[c]} in RGB {tuple(round(255 * v) for v in colours[c])}"
                    for c in range(len(names)) if counts[c])  # fmt: skip
    logger.info(f"{len(boxes)} detections, too dense for labels on {w}x{h}: boxes coloured by class ({key})")
    return visualizer.overlay_instances(boxes=boxes, assigned_colors=[colours[c] for c in classes])


class RotatedBoxVideoVisualizer(VideoVisualizer):
    """
    Detectron2's VideoVisualizer, which keeps an object's colour from frame to frame by matching
    boxes with pycocotools' IoU, which takes (x, y, w, h) boxes only: rotated boxes (XYWHA) are
    matched by their enclosing boxes. Horizontal boxes go through unchanged.
    """

    def _assign_colors(self, instances):
        for instance in instances:
            if instance.bbox is not None and len(instance.bbox) == 5:
                enclosing = BoxMode.convert(np.asarray(instance.bbox)[None], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
                instance.bbox = BoxMode.convert(enclosing, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)[0]
        return super()._assign_colors(instances)


class DetectionVisualizer:
    """
    Detect objects with a RetinaNetPlugin (or any Detectron2 detector) and draw them:
    Detectron2's VisualizationDemo for box detectors.

    Attributes:
        predictor (RetinaPredictor or TiledPredictor): runs the model on one BGR image;
            tile by tile when cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0.
        metadata (Metadata): class names and colors of the labels.
    """

    def __init__(self, cfg, instance_mode: ColorMode = ColorMode.IMAGE, class_thresholds=None):
        """
        Args:
            cfg (CfgNode): the model's config; `MODEL.WEIGHTS` is loaded.
            instance_mode (ColorMode): how `Visualizer` colors instances.
            class_thresholds (list[float] or None): a minimum score per class (e.g. the
                F1-optimal ones of tools/analyze_results.py); None keeps every detection.
        """
        self.class_thresholds = None if class_thresholds is None else torch.tensor(class_thresholds)
        self.instance_mode = instance_mode
        self.cpu_device = torch.device("cpu")
        self.predictor = TiledPredictor(cfg) if cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0 else RetinaPredictor(cfg)
        self.metadata = dataset_metadata(cfg, self.predictor.model.class_names)

    def run_on_image(self, image: np.ndarray) -> Tuple[dict, VisImage]:
        """
        Args:
            image (np.ndarray): an image of shape (H, W, C) in BGR order (as OpenCV reads it).

        Returns:
            predictions (dict): the model's output for the image, {"instances": Instances}.
            vis_output (VisImage): the image (same size) with the detections drawn
                (`draw_detections`: without labels when too dense for them).
        """
        predictions = self._kept(self.predictor(image))
        instances = predictions["instances"].to(self.cpu_device)
        vis_output = draw_detections(image[:, :, ::-1], instances, self.metadata, self.instance_mode)
        return predictions, vis_output

    def _kept(self, predictions: dict) -> dict:
        """The detections scoring at least their class's threshold (all of them without thresholds)."""
        if self.class_thresholds is None:
            return predictions
        instances = predictions["instances"].to(self.cpu_device)
        keep = instances.scores >= self.class_thresholds[instances.pred_classes]
        return {**predictions, "instances": instances[keep]}

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """
        Detect and draw objects in every frame of a video; a `VideoVisualizer` keeps the
        colors of objects consistent from frame to frame.

        Args:
            video (cv2.VideoCapture): an opened video; it is read to its end.

        Yields:
            np.ndarray: each annotated frame, in BGR order and of the input frame's size.
        """
        video_visualizer = RotatedBoxVideoVisualizer(self.metadata, self.instance_mode)
        for frame in _frames(video):
            instances = self._kept(self.predictor(frame))["instances"].to(self.cpu_device)
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            vis_frame = video_visualizer.draw_instance_predictions(rgb, instances)
            yield cv2.cvtColor(vis_frame.get_image(), cv2.COLOR_RGB2BGR)


def _frames(video: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Yield the BGR frames of an opened video until it ends."""
    while video.isOpened():
        success, frame = video.read()
        if not success:
            break
        yield frame
