#!/usr/bin/env python
"""
Plot the losses, learning rate and box AP of a Detectron2 run from its metrics.json.
The command line and its logic: retina_plugin.cli.plot_metrics (`--help`).
"""
from retina_plugin.cli.plot_metrics import main

if __name__ == "__main__":
    main()
