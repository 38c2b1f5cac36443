"""
Inference on images, folders and videos (`predictor`, Detectron2's DefaultPredictor and
Visualizer) and tile by tile on large images (`tiling`).
"""
