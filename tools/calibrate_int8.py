#!/usr/bin/env python
"""
Write the int8 calibration file of trained weights; with --eval, the AP of float32 and int8.
The command line and its logic: retina_plugin.cli.calibrate_int8 (`--help`).
"""
from retina_plugin.cli.calibrate_int8 import main

if __name__ == "__main__":
    main()
