# One entry point: `make test` (set up + run the tests), `make run` (set up + the embedded run).
.PHONY: setup test test-slow run run-rotated bench clean

setup:
	bash scripts/setup_venv.sh
	bash scripts/setup_peers_venv.sh

test: setup
	.venv/bin/python -m pytest -q -n auto tests

# Long runs (the full embedded training to its AP target), skipped by `make test`.
test-slow: setup
	.venv/bin/python -m pytest -q -m slow tests

run: setup
	bash scripts/run_embedded.sh

# The rotated model against its horizontal twin on the embedded rotated dataset, both scored with rotated IoU (docs/rotated.md).
run-rotated: setup
	bash scripts/run_rotated.sh

# The benchmark (benchmarks/bench.py: ours, Detectron2, torchvision; then ONNX Runtime and OpenVINO, runtimes.py; then DeepForest, deepforest.py); installs the bench extra first.
bench: setup
	.venv/bin/python -m pip install -q -e ".[bench]"
	.venv/bin/python benchmarks/bench.py
	.venv/bin/python benchmarks/deepforest.py

clean:
	rm -rf output datasets
