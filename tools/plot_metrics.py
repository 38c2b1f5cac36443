#!/usr/bin/env python
"""
Plot the losses, learning rate and box AP of a Detectron2 run from its metrics.json.

    python tools/plot_metrics.py output/retinanet_R50                 # -> output/retinanet_R50/metrics.png
    python tools/plot_metrics.py output/retinanet_R50/metrics.json --out curves.png

(retina_plugin.cli.plot_metrics)
"""
from retina_plugin.cli.plot_metrics import main

if __name__ == "__main__":
    main()
