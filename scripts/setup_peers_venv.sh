#!/usr/bin/env bash
# Creates .venv-peers/: the packages the plugin is compared with (DeepForest, for
# tests/geo/test_deepforest_parity.py and benchmarks/deepforest.py) that cannot go into the
# project venv (deepforest 2.1.0 pins safetensors<0.6 and pulls transformers, timm, lightning,
# opencv-python-headless, ...). It is layered on the project venv: a .pth makes that venv's
# packages (torch, torchvision, rasterio, ...) importable, and the peer venv's own win.
# Run it after scripts/setup_venv.sh; a second run finds the stamp written at the end and
# returns at once. BASE_VENV (default .venv) and PEERS_VENV (default .venv-peers) move them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE_VENV=${BASE_VENV:-$ROOT/.venv}
PEERS=${PEERS_VENV:-$ROOT/.venv-peers}
PY="$PEERS/bin/python"
STAMP="$PEERS/.peers_installed"
PEER_PINS=("deepforest==2.1.0")

if [ ! -x "$BASE_VENV/bin/python" ]; then
  echo "setup_peers: no project venv at $BASE_VENV; run scripts/setup_venv.sh first" >&2
  exit 1
fi
want=$( (cat "$0"; echo "$BASE_VENV") | sha256sum | cut -d' ' -f1)
if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup_peers: $PEERS is up to date"
  exit 0
fi

# One installer at a time (parallel test workers may call this at once).
mkdir -p "$(dirname "$PEERS")"
exec 9>"$PEERS.lock"
flock 9
if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup_peers: $PEERS is up to date"
  exit 0
fi

if [ ! -x "$PY" ]; then
  echo "setup_peers: creating $PEERS on $BASE_VENV"
  "$BASE_VENV/bin/python" -m venv "$PEERS"
fi
base_site=$("$BASE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
peer_site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$base_site" > "$peer_site/zz_base_venv.pth"

echo "setup_peers: installing ${PEER_PINS[*]} (about 40 s, first run only)"
"$PY" -m pip install --disable-pip-version-check -q "${PEER_PINS[@]}"
"$PY" -c "import deepforest.main, torch; print('setup_peers: deepforest', deepforest.__version__, 'on torch', torch.__version__)"
echo "$want" > "$STAMP"
echo "setup_peers: done"
