"""retina_plugin: RetinaNet (Lin et al., "Focal Loss for Dense Object Detection") for Detectron2.

Detectron2 itself is not listed in install_requires: it is not published on PyPI under its
own name. `import retina_plugin` checks for it and says how to install it.
"""
from setuptools import find_packages, setup

setup(
    name="retina_plugin",
    version="0.1.0",
    description="RetinaNet (focal loss, ResNet-FPN P3-P7) as a Detectron2 plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["retina_plugin", "retina_plugin.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "fvcore",
        "iopath",
        "pycocotools",
        "numpy",
        "Pillow",
        "matplotlib",
        "opencv-python",
        "safetensors",  # tools/convert_weights.py: DeepForest's model.safetensors
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "hypothesis", "import-linter"],
        # GeoTIFF rasters and vector layers: retina_plugin.geo, tools/predict_raster.py
        "geo": ["rasterio", "geopandas", "pyogrio", "shapely", "pyproj"],
        # benchmarks/runtimes.py: the runtimes ours is compared with, and their int8 quantizers
        "bench": ["onnx", "onnxruntime", "openvino", "nncf"],
    },
)
