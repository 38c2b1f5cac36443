"""retina_plugin.analysis.anchors.resized_boxes: the dataset's boxes resized as Detectron2's DatasetMapper resizes them."""
import torch
from detectron2.data import DatasetCatalog, DatasetMapper

from anchor_cases import analysis_cfg
from retina_plugin.analysis.anchors import load_resized_boxes


def test_boxes_are_resized_as_the_mapper_resizes_them(datasets):
    cfg = analysis_cfg()
    resized = load_resized_boxes(cfg, "analysis_mixed", "train")
    mapper = DatasetMapper(cfg, is_train=True)  # no flip (RANDOM_FLIP none), one size: deterministic
    assert resized.image_sizes == [(256, 422)] * 3 + [(256, 256)]
    for record, boxes, size in zip(DatasetCatalog.get("analysis_mixed"), resized.boxes, resized.image_sizes):
        mapped = mapper(record)
        assert tuple(mapped["image"].shape[1:]) == size
        assert torch.equal(mapped["instances"].gt_boxes.tensor, boxes)
