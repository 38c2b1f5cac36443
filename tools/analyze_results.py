#!/usr/bin/env python
"""
Which classes, which errors, which thresholds: error analysis of a detector's COCO results.
The command line and its logic: retina_plugin.cli.analyze_results (`--help`).
"""
from retina_plugin.cli.analyze_results import main

if __name__ == "__main__":
    main()
