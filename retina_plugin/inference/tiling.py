"""
Tiled inference for images far larger than the network's input (aerial, satellite,
microscopy): cut the image into overlapping tiles, detect in each tile at native resolution,
shift the boxes to image coordinates, drop the pieces of objects cut by a tile edge that a
neighbouring tile sees whole (and keep an object seen whole by several tiles from one of
them), and merge all tiles with class-wise NMS.

By default tiles are fed at their native resolution: nothing is resized, so an object keeps
the pixel size it has in the image, and the model must have been trained at that scale.
MODEL.RETINA_PLUGIN.TILE_RESIZE [min_size, max_size] resizes each tile as torchvision's
GeneralizedRCNNTransform resizes an image (DeepForest's 400 px windows seen at 800 px), and
MODEL.RETINA_PLUGIN.TILE_MERGE "deepforest" merges the tiles as DeepForest does
(`tiles.mosaic_merge`) instead of the edge rule below (docs/deepforest.md). Memory is
bounded by the tile size and the batch: the image stays as it was given (uint8), and only
`tile_batch` tiles at a time are converted to float and run through the network.
`TiledInference.detect_windows` takes the tiles from a reader instead of an image in memory
(a raster read window by window: retina_plugin.geo.predict); a reader may skip a tile (all nodata).
The per-tile loop is `tile_detection.detect_tiles`, the resize `tile_resize`, the checks of the
settings `tiling_checks`, the tile grid and the merge across tiles `tiles`.

Each tile is capped by the model's own TEST.DETECTIONS_PER_IMAGE; the whole image has no cap
unless MODEL.RETINA_PLUGIN.TILED_DETECTIONS_PER_IMAGE sets one, since a large image holds far
more objects than a tile.

A model of rotated boxes (MODEL.ANCHOR_GENERATOR.NAME RotatedAnchorGenerator, `box_dim` 5) is
tiled the same way: the edge rules read each rotated box's enclosing box, which decides exactly
what they decide (see retina_plugin.inference.tiles), and the tiles merge by rotated NMS.

`TiledInference` wraps a built model so that Detectron2's `inference_on_dataset` (and the
trainer's `test`) evaluates tiled prediction; `retina_plugin.inference.predictor.TiledPredictor` is
Detectron2's `DefaultPredictor` with it (one numpy image in, its detections out).
`retina_plugin.inference.model.inference_model` returns that wrapper when cfg.MODEL.RETINA_PLUGIN.TILE_SIZE > 0.
With test-time augmentation (cfg.TEST.AUG.ENABLED) the wrapped model is a
`retina_plugin.inference.tta.RetinaNetWithTTA`: each tile is detected in all its versions
(resized to TEST.AUG.MIN_SIZES, flipped), merged, then the tiles are merged as without it.
"""
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn
from detectron2.config import configurable
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, RotatedBoxes

from ..modeling import box_transform
from .tile_detection import detect_tiles
from .tile_resize import tile_input
from .tiles import EDGE_MARGIN, merge_tiles, tile_grid, tile_interiors, tile_starts
from .tiling_checks import check_tiling_arguments

__all__ = ["TiledInference"]


class TiledInference(nn.Module):
    """
    Runs a detector over an image tile by tile. Takes and returns Detectron2's model inputs
    and outputs, so `inference_on_dataset(TiledInference(cfg, model), loader, evaluator)`
    evaluates tiled prediction; the loader must not resize (INPUT.MIN_SIZE_TEST 0), since
    tiles are cut from the image at its own resolution (and resized, if at all, one by one).
    """

    @configurable
    def __init__(
        self,
        model: nn.Module,
        *,
        tile_size: int,
        overlap: float = 0.2,
        tile_batch: int = 4,
        nms_thresh: float = 0.5,
        detections_per_image: int = 0,
        edge_margin: float = EDGE_MARGIN,
        resize: Sequence[int] = (),
        merge: str = "edges",
        box_dim: int = 4,
    ):
        """
        Args:
            model: a built detector (e.g. RetinaNetPlugin) taking Detectron2's model inputs.
            tile_size: side of the square tiles, in pixels.
            overlap: fraction of `tile_size` shared by neighbouring tiles, in [0, 1); objects
                up to `overlap * tile_size - 2 * edge_margin` pixels are seen whole by some tile.
            tile_batch: tiles per forward of `model`.
            nms_thresh: IoU threshold of the class-wise NMS that merges the tiles.
            detections_per_image: the most detections kept for the whole image, 0 = no cap
                (`model` caps each tile with its own setting, TEST.DETECTIONS_PER_IMAGE for
                RetinaNetPlugin).
            edge_margin: see `tile_interiors` and `keep_tile_detections`.
            resize: () feeds tiles at native resolution; (min_size, max_size) resizes each
                tile first (`resize_tile`), the model mapping its boxes back to the tile.
            merge: "edges" (each object from the tile that sees it whole, then class-wise NMS
                where tiles overlap) or "deepforest" (`mosaic_merge`: one NMS over all boxes).
            box_dim: 4 for a model of horizontal boxes (XYXY), 5 for one of rotated boxes
                (XYWHA, `RotatedBoxes`): the edge rules read their enclosing boxes and the tiles
                merge by rotated NMS (retina_plugin.inference.tiles).
        """
        super().__init__()
        check_tiling_arguments(tile_size, overlap, tile_batch, detections_per_image, resize, merge, box_dim)
        self.model = model
        # Start in the wrapped model's mode: inference_on_dataset puts the wrapper in eval mode
        # and then back in the mode it found, which a new Module's default (training) would
        # impose on the model.
        self.train(model.training)
        self.tile_size = tile_size
        self.overlap = overlap
        self.tile_batch = tile_batch
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.edge_margin = edge_margin
        self.resize = tuple(resize)
        self.merge = merge
        self.box_dim = box_dim

    @classmethod
    def from_config(cls, cfg, model):
        node = cfg.MODEL.RETINA_PLUGIN
        return {
            "model": model,
            "tile_size": node.TILE_SIZE,
            "overlap": node.TILE_OVERLAP,
            "tile_batch": node.TILE_BATCH,
            "nms_thresh": node.TILE_NMS_THRESH or cfg.MODEL.RETINANET.NMS_THRESH_TEST,
            "detections_per_image": node.TILED_DETECTIONS_PER_IMAGE,
            "resize": tuple(node.TILE_RESIZE),
            "merge": node.TILE_MERGE,
            "box_dim": box_transform.box_dim(cfg),
        }

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> List[Dict[str, Instances]]:
        """
        Args:
            batched_inputs: per image a dict with "image" (C, H, W) uint8 or float, at full
                resolution, and optional "height", "width" to rescale the boxes to.
        Returns:
            per image {"instances": Instances} with pred_boxes, scores, pred_classes.
        """
        results = []
        for x in batched_inputs:
            instances = self.detect(x["image"])
            height, width = x.get("height", instances.image_size[0]), x.get("width", instances.image_size[1])
            results.append({"instances": detector_postprocess(instances, height, width)})
        return results

    def network_input(self, tile: torch.Tensor) -> torch.Tensor:
        """A (C, h, w) float tile as the network gets it: as it is, or resized by `resize`."""
        return tile_input(tile, self.resize)

    def num_tiles(self, height: int, width: int) -> int:
        """How many tiles an image of `height` x `width` is cut into."""
        rows = tile_starts(height, self.tile_size, self.overlap)
        return len(rows) * len(tile_starts(width, self.tile_size, self.overlap))

    @torch.no_grad()
    def detect(self, image: torch.Tensor) -> Instances:
        """
        Args:
            image: (C, H, W) image in the model's channel order, uint8 or float, on any device;
                it is sliced, never copied whole.
        Returns:
            Instances of size (H, W) with pred_boxes (Boxes, or RotatedBoxes when box_dim is 5),
            scores, pred_classes.
        """
        height, width = image.shape[-2:]
        return self.detect_windows(lambda x0, y0, x1, y1: image[:, y0:y1, x0:x1], height, width)

    @torch.no_grad()
    def detect_tiles(
        self,
        read: Callable[[int, int, int, int], Optional[torch.Tensor]],
        tiles: torch.Tensor,
        interiors: torch.Tensor,
        indices: Optional[Sequence[int]] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> List[tuple]:
        """
        `tile_detection.detect_tiles` with this module's model, batch, resize and merge: what
        `detect_windows` merges, and what a block of a raster keeps for the merge of the raster
        (retina_plugin.geo.blocks). `read` as for `detect_windows`; tiles: (T, 4) the image's
        `tile_grid`; interiors: (T, 4) their `tile_interiors`; indices: rows of `tiles` (all by
        default). Returns per tile run (tile index, boxes (N, 4) or (N, 5) in image coordinates,
        scores (N,), classes (N,), shared (N,) bool), with merge "deepforest" every box of the tile.
        """
        return detect_tiles(
            self.model, read, tiles, interiors, tile_batch=self.tile_batch, resize=self.resize,
            keep_all=self.merge == "deepforest", indices=indices, progress=progress,
        )  # fmt: skip

    @torch.no_grad()
    def detect_windows(
        self,
        read: Callable[[int, int, int, int], Optional[torch.Tensor]],
        height: int,
        width: int,
        progress: Optional[Callable[[int], None]] = None,
    ) -> Instances:
        """
        Detect in an image of `height` x `width` whose tiles come from `read`, `tile_batch`
        tiles in memory at a time.

        Args:
            read: read(x0, y0, x1, y1) -> the (C, y1 - y0, x1 - x0) tile in the model's channel
                order (uint8 or float), or None to skip the tile (nothing there to detect).
            progress: called with the number of tiles handled (run or skipped) after each batch.
        Returns:
            Instances of size (height, width) with pred_boxes, scores, pred_classes.
        """
        tiles = tile_grid(height, width, self.tile_size, self.overlap)
        interiors = tile_interiors(tiles, (height, width), self.edge_margin)
        found = self.detect_tiles(read, tiles, interiors, progress=progress)
        boxes, scores, classes, shared = ([f[i] for f in found] for i in range(1, 5))
        device = self.model.device
        structure = RotatedBoxes if self.box_dim == 5 else Boxes
        if not boxes:
            device_boxes = torch.zeros((0, self.box_dim), device=device)
            return Instances(
                (height, width), pred_boxes=structure(device_boxes), scores=device_boxes.new_zeros(0),
                pred_classes=torch.zeros(0, dtype=torch.int64, device=device),
            )  # fmt: skip
        boxes, scores, classes, shared = (torch.cat(x) for x in (boxes, scores, classes, shared))
        boxes, keep = merge_tiles(boxes, scores, classes, shared, self.nms_thresh, self.detections_per_image, self.merge)
        return Instances(
            (height, width), pred_boxes=structure(boxes[keep]), scores=scores[keep], pred_classes=classes[keep]
        )

