#!/usr/bin/env python
"""
Draw RetinaNetPlugin's detections on images or a video, like Detectron2's demo/demo.py
(retina_plugin.cli.demo).

    python tools/demo.py --config-file configs/retinanet_R50.yaml --input img1.jpg img2.jpg \
        --output out/ MODEL.WEIGHTS output/retinanet_R50/model_final.pth
    python tools/demo.py --config-file configs/retinanet_R50.yaml --input 'images/*.jpg' --output out/
    python tools/demo.py --config-file configs/retinanet_R50.yaml --video-input in.mp4 --output out/
    python tools/demo.py --config-file configs/retinanet_R50.yaml --input huge.png --output out/ \
        --tile 512 --overlap 0.2 --opts MODEL.WEIGHTS output/retinanet_R50/model_final.pth
"""
from retina_plugin.cli.demo import main

if __name__ == "__main__":
    main()
