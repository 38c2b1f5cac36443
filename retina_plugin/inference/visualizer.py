"""
Detections drawn on images and video frames, as Detectron2's `demo/predictor.py`
(VisualizationDemo) draws them: `RetinaPredictor` (or `TiledPredictor` when
MODEL.RETINA_PLUGIN.TILE_SIZE > 0) and Detectron2's `Visualizer` / `VideoVisualizer`.
"""
from typing import Iterator, Tuple

import cv2
import numpy as np
import torch
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

from .predictor import RetinaPredictor, TiledPredictor, dataset_metadata

__all__ = ["DetectionVisualizer"]


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
            vis_output (VisImage): the image (same size) with the detections drawn.
        """
        predictions = self._kept(self.predictor(image))
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        instances = predictions["instances"].to(self.cpu_device)
        vis_output = visualizer.draw_instance_predictions(predictions=instances)
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
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)
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
