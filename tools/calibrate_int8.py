#!/usr/bin/env python
"""
Calibrate int8 inference for trained RetinaNetPlugin weights: run the float32 model on
calibration images, record the range of every activation the int8 model quantizes, and write
them to a JSON file. With --eval, evaluate the float32 and the int8 model on the config's
DATASETS.TEST and report the AP each gets, their difference and the time per image.

    python tools/calibrate_int8.py --config-file configs/shapes_R18_cpu.yaml --eval \
        --opts MODEL.WEIGHTS output/shapes_R18_cpu/model_final.pth
    python tools/calibrate_int8.py --config-file my.yaml --train-json ann/train.json --train-images images/train \
        --test-json ann/val.json --test-images images/val --num-images 64 --eval \
        --output output/int8_calibration.json --opts MODEL.WEIGHTS output/model_final.pth

Then run the int8 model with the options it prints, e.g. in the demo or train_net --eval-only:
    MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8 MODEL.RETINA_PLUGIN.INT8_CALIBRATION <output>

(retina_plugin.cli.calibrate_int8)
"""
from retina_plugin.cli.calibrate_int8 import main

if __name__ == "__main__":
    main()
