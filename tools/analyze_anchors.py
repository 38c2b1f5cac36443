#!/usr/bin/env python
"""
Do a config's anchors cover a dataset's boxes? Match every ground-truth box to the model's
anchors (MODEL.ANCHOR_GENERATOR) as training does (after the config's resizing, with the Matcher
of MODEL.RETINANET.IOU_THRESHOLDS / IOU_LABELS), report the coverage, the positive anchors per
box and their levels, and suggest MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS that cover more
boxes, ready to paste into any Detectron2 RetinaNet config.

    python tools/analyze_anchors.py --config-file configs/shapes_R18_cpu.yaml --dataset shapes_train \
        --output output/anchors
    python tools/analyze_anchors.py --config-file configs/retinanet_R50.yaml \
        --train-json ann/train.json --train-images images/train [--split test] [--max-images 2000]
    ... --opts INPUT.MIN_SIZE_TRAIN "(1024,)" MODEL.RETINANET.IOU_THRESHOLDS "[0.4, 0.6]"

--train-json/--train-images (the dataset flags of tools/train_net.py) analyse a COCO-format file
instead of --dataset, whatever --split (--test-json/--test-images too; given both, the one of
--split). --split chooses the resizing, as training or as testing resizes, and the default
dataset: the config's first DATASETS.TRAIN, or DATASETS.TEST.

Prints the report and the lines to paste into a config, and writes anchor_coverage.png and
anchor_coverage.json (every number) into --output (default: the config's OUTPUT_DIR). An error
ends with one line `analyze_anchors: error: ...` and exit status 2. The logic is in
retina_plugin.cli.analyze_anchors (the analysis itself in retina_plugin.analysis.anchors).
"""
from retina_plugin.cli.analyze_anchors import main

if __name__ == "__main__":
    main()
