#!/usr/bin/env python
"""
Which classes, which errors, which threshold? Analyse a detector's COCO results on a dataset:

    python tools/analyze_results.py --config-file configs/shapes_R18_cpu.yaml --dataset shapes_val \
        --output output/error_analysis --opts MODEL.WEIGHTS output/shapes_R18_cpu/model_final.pth
    python tools/analyze_results.py --test-json ann/val.json --test-images images/val \
        --predictions coco_instances_results.json --output out [--iou 0.5] [--num-worst 10]

Without --predictions it runs MODEL.WEIGHTS on the dataset first (and keeps its
coco_instances_results.json in --output); with it, any detector's COCO results file
(Detectron2's own RetinaNet too) is analysed. --test-json/--test-images analyse a COCO-format
dataset instead of --dataset (default: the config's first DATASETS.TEST).

Prints the per-class table and writes into --output (default: OUTPUT_DIR/error_analysis):
per_class.csv, pr_curves.png, thresholds.yaml (the F1-optimal score threshold per class),
confusion_matrix.csv/.png, errors.json/errors.png (AP lost to each TIDE error type) and worst/
(the images with most errors). See docs/error_analysis.md. An error ends with one line
`analyze_results: error: ...` and exit status 2. The logic is in retina_plugin.cli.analyze_results
(the analysis itself in retina_plugin.analysis.detections).
"""
from retina_plugin.cli.analyze_results import main

if __name__ == "__main__":
    main()
