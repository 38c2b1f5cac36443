"""
Exact rotated-box operations in torch, the bottom layer of the package: Detectron2's compiled
`pairwise_iou_rotated`, `nms_rotated` and `batched_nms_rotated` under the same names and
signatures, and the corners of rotated boxes. See docs/rotated.md, "Rotated IoU and NMS".
"""
from .overlap_candidates import overlap_candidates
from .rotated_corners import rotated_box_corners
from .rotated_iou import matched_iou_rotated, pairwise_iou_rotated
from .rotated_nms import batched_nms_rotated, nms_rotated

__all__ = [
    "batched_nms_rotated",
    "matched_iou_rotated",
    "nms_rotated",
    "overlap_candidates",
    "pairwise_iou_rotated",
    "rotated_box_corners",
]
