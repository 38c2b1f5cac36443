#!/usr/bin/env python
"""
Score a raster's detections (a vector layer, as tools/predict_raster.py writes) against map
features such as tree crowns:

    python tools/evaluate_raster.py --predictions detections.gpkg --ground-truth crowns.gpkg \
        [--raster scene.tif ...] [--iou 0.4 0.5] [--score-threshold T] [--output-dir DIR]

Prints precision and recall at each IoU (one-to-one matching, greedy by score) and COCO AP
(AP, AP50, AP75, by area; per class when there are several labels) with each raster as one
image, per raster and overall. --raster defaults to the files of the predictions' `source`
column. Ground truth in another CRS is reprojected to the raster's. Writes into --output-dir
(default: the predictions' folder) evaluation.json and <raster>_evaluation.png (true positives,
false positives and misses at the first IoU). See docs/geospatial_evaluation.md. An error ends
with one line `evaluate_raster: error: ...` and exit status 2. The logic is in
retina_plugin.geo.evaluate and evaluate_plot.

(retina_plugin.cli.evaluate_raster)
"""
from retina_plugin.cli.evaluate_raster import main

if __name__ == "__main__":
    main()
