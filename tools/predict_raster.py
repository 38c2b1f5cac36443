#!/usr/bin/env python
"""
Detect objects in georeferenced rasters (GeoTIFF, anything GDAL reads), window by window, and
write them as polygons in the raster's CRS (retina_plugin.cli.predict_raster; docs/geospatial.md).

    python tools/predict_raster.py --config-file configs/retinanet_R50.yaml --input scene.tif \
        --output detections.gpkg --tile 512 --overlap 0.2 MODEL.WEIGHTS model_final.pth
"""
from retina_plugin.cli.predict_raster import main

if __name__ == "__main__":
    main()
