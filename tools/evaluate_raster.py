#!/usr/bin/env python
"""
Precision, recall and COCO AP of raster detections against map features.
The command line and its logic: retina_plugin.cli.evaluate_raster (`--help`).
"""
from retina_plugin.cli.evaluate_raster import main

if __name__ == "__main__":
    main()
