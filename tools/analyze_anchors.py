#!/usr/bin/env python
"""
Do a config's anchors cover a dataset's boxes? Coverage, positives per box, better anchors.
The command line and its logic: retina_plugin.cli.analyze_anchors (`--help`).
"""
from retina_plugin.cli.analyze_anchors import main

if __name__ == "__main__":
    main()
