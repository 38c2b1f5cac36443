"""
Georeferenced rasters (GeoTIFF): reading window by window (raster.py), detections as map
features and map features as boxes (vectors.py), prediction over a raster (predict.py),
training tiles cut from a raster and its vectors (dataset.py), evaluation in map space
(evaluate.py) and synthetic scenes (scenes.py).

Needs the `geo` extra: rasterio, geopandas, pyogrio, shapely, pyproj (`make setup` installs
them). Nothing else of retina_plugin imports this package.
"""
