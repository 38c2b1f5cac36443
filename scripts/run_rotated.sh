#!/usr/bin/env bash
# The embedded rotated run: train the rotated RetinaNetPlugin (configs/rotated_shapes_R18.yaml) and
# its horizontal twin (configs/rotated_shapes_R18_horizontal.yaml) on the generated rotated_shapes
# dataset with tools/train_net.py, which scores each on its val split with rotated IoU (DOTA's
# mAP50; the horizontal model's boxes at angle 0); then print both. Extra arguments go to both
# train_net.py runs as KEY VALUE config options.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${RETINA_PLUGIN_OUTPUT:-output/rotated_shapes}
start=$(date +%s)

# The first run generates the dataset (deterministic) and registers it.
$PY tools/train_net.py --config-file configs/rotated_shapes_R18.yaml OUTPUT_DIR "$OUT/rotated" "$@"
$PY tools/train_net.py --config-file configs/rotated_shapes_R18_horizontal.yaml OUTPUT_DIR "$OUT/horizontal" "$@"

# Each run's last evaluation, from its metrics.json, side by side (and into ap50.json).
$PY - "$OUT" <<'PYTHON'
import json, sys
out = sys.argv[1]
ap50 = {}
for model in ("rotated", "horizontal"):
    lines = [json.loads(line) for line in open(f"{out}/{model}/metrics.json") if "dota/mAP50" in line]
    ap50[model] = {"mAP50": lines[-1]["dota/mAP50"], "mAP50_auc": lines[-1]["dota/mAP50_auc"]}
json.dump(ap50, open(f"{out}/ap50.json", "w"), indent=2)
print("\nAP50 with rotated IoU on rotated_shapes_val (DOTA mAP50, %):")
for model, r in ap50.items():
    print(f"  {model:12}{r['mAP50']:8.2f} (11-point){r['mAP50_auc']:8.2f} (area)")
PYTHON

echo
echo "Finished in $(( $(date +%s) - start )) s."
echo "  models:      $OUT/rotated/model_final.pth, $OUT/horizontal/model_final.pth"
echo "  evaluations: $OUT/{rotated,horizontal}/log.txt, AP50 of both in $OUT/ap50.json"
