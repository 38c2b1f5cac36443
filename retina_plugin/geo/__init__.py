"""
Georeferenced rasters (GeoTIFF), read window by window by retina_plugin.data.raster: detections as map
features and map features as boxes (vectors.py), prediction over a raster (predict.py),
training tiles cut from a raster and its vectors (dataset.py), evaluation in map space
(evaluate.py, its figure in evaluate_plot.py) and synthetic scenes (scenes.py).

Needs the `geo` extra: rasterio, geopandas, pyogrio, shapely, pyproj (`make setup` installs
them). The rest of retina_plugin imports it only where it is used (the raster datasets of
train_net.py and their windows in the mapper), so it runs without the extra.
"""
