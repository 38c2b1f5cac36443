#!/usr/bin/env bash
# Creates the project venv at .venv/ and installs torch, torchvision, Detectron2, its runtime
# needs, the geo extra, the test tools and retina_plugin (editable). A second run finds the stamp written at
# the end and returns at once; it re-installs only when this script or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.retina_plugin_installed"

TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
# Detectron2 is not on PyPI under its own name. Where none is importable, this wheel of
# upstream Detectron2's Python sources is used; its cp310 tag makes pip refuse it on 3.11, so
# it is installed with PyPA's `installer`. Its compiled _C is not loaded by RetinaNet.
D2_WHEEL_PIN="sal-detectron2==0.7.2"
D2_WHEEL_FILE="sal_detectron2-0.7.2-cp310-none-any.whl"
D2_WHEEL_SHA256="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
RUNTIME_NEEDS=(
  fvcore iopath pycocotools yacs termcolor tabulate cloudpickle tqdm matplotlib
  "omegaconf>=2.1,<2.4" hydra-core tensorboard packaging "setuptools<81" Pillow
  opencv-python pytest pytest-xdist hypothesis onnx onnxruntime
  # COCO evaluation in C++ (retina_plugin/evaluation/cocoeval.py; pycocotools stays the fallback)
  "faster-coco-eval>=1.8"
  # the layer contract of .importlinter (tests/test_layers.py)
  import-linter
  # the geo extra (retina_plugin/geo, tools/predict_raster.py): GeoTIFF and vector I/O; Dask
  # and GeoParquet for predict_raster.py --workers/--scheduler (retina_plugin/geo/dask_predict.py)
  rasterio geopandas pyogrio shapely pyproj dask distributed pyarrow
)

want=$(cat "$0" setup.py | sha256sum | cut -d' ' -f1)
if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

if [ ! -x "$PY" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "setup: installing $TORCH_PIN $TORCHVISION_PIN (several GB, first run only)"
  pip_install "$TORCH_PIN" "$TORCHVISION_PIN"
fi
echo "setup: installing Detectron2's runtime needs and test tools"
pip_install "${RUNTIME_NEEDS[@]}"

if "$PY" -c "import detectron2" 2>/dev/null; then
  echo "setup: using the Detectron2 already importable in $VENV"
else
  echo "setup: installing Detectron2 from the pinned wheel $D2_WHEEL_PIN"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.10 "$D2_WHEEL_PIN" -d "$tmp"
  got=$(sha256sum "$tmp/$D2_WHEEL_FILE" | cut -d' ' -f1)
  if [ "$got" != "$D2_WHEEL_SHA256" ]; then
    echo "setup: sha256 of $D2_WHEEL_FILE is $got, expected $D2_WHEEL_SHA256; not installing" >&2
    exit 1
  fi
  pip_install installer
  "$PY" -m installer "$tmp/$D2_WHEEL_FILE"
fi

echo "setup: installing retina_plugin (editable)"
pip_install --no-build-isolation -e .
"$PY" -c "import retina_plugin" # fails here, not in the tests, when something is missing
echo "$want" > "$STAMP"
echo "setup: done"
