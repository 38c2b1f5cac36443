#!/usr/bin/env bash
# The embedded default run: train RetinaNetPlugin on the generated shapes dataset with
# tools/train_net.py, evaluate it with COCOEvaluator, run the demo on val images and plot the
# run's metrics. Extra arguments go to train_net.py as KEY VALUE config options.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=configs/shapes_R18_cpu.yaml
OUT=${RETINA_PLUGIN_OUTPUT:-output/shapes_R18_cpu}
start=$(date +%s)

# Generates the dataset the first time (deterministic), prints where it is.
DATA=$($PY -c "from retina_plugin.data import register_shapes_dataset; print(register_shapes_dataset())" | tail -n 1)
$PY tools/train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUT" "$@"
$PY tools/demo.py --config-file "$CONFIG" --input "$DATA/val/00000?.png" \
  --output "$OUT/demo" --confidence-threshold 0.5 --opts MODEL.WEIGHTS "$OUT/model_final.pth" "$@"
$PY tools/plot_metrics.py "$OUT" --out "$OUT/metrics.png"

echo
echo "Finished in $(( $(date +%s) - start )) s."
echo "  model:        $OUT/model_final.pth"
echo "  evaluation:   $OUT/inference/shapes_val/ (bbox AP in $OUT/log.txt)"
echo "  demo images:  $OUT/demo/"
echo "  metrics plot: $OUT/metrics.png"
