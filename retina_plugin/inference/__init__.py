"""
A model ready for use, in one place every path calls (`model`: `load_model` builds it, loads its
weights and gives it its precision; `inference_model` wraps it for test-time augmentation and
tiling), and what runs it: int8 on the CPU (`int8/`, its calibration in `calibration`), COCO
evaluation (`evaluation`), tiles (`tiles`; `tiling` with `tile_detection`, `tile_resize` and
`tiling_checks`), test-time augmentation (`tta`), Detectron2's
`DefaultPredictor` (`predictor`), drawings (`visualizer`; readable on dense scenes: `dense_drawing`)
and image and video files (`media`).
"""
