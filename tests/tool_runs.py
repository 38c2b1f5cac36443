"""
The project's tools run as a user runs them: real subprocesses from the repository root, on a
small config and a generated dataset. Shared by the tests of every subpackage.
"""
import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "shapes_R18_cpu.yaml"
BASE_CONFIG = os.path.join("configs", "Base-RetinaNetPlugin.yaml")

# The small model of the tests: Base-RetinaNetPlugin.yaml with a ResNet-18 (RES2 64 channels),
# 3 classes, random weights, on the CPU. Tests add what they need on top.
SMALL_MODEL_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RETINANET.NUM_CLASSES", "3",
]  # fmt: skip

# SMALL_MODEL_OPTS switched to rotated boxes (XYWHA): Detectron2's RotatedAnchorGenerator, one
# angle (0 degrees: a random model's boxes then start upright), five box regression weights.
ROTATED_OPTS = [
    "MODEL.ANCHOR_GENERATOR.NAME", "RotatedAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.ANGLES", "[[0.0]]",
    "MODEL.RETINANET.BBOX_REG_WEIGHTS", "(1.0, 1.0, 1.0, 1.0, 1.0)",
]  # fmt: skip
# A random model scores nearly every anchor above the threshold: 100 candidates a level (of 1000)
# keep the rotated NMS of the tests' images (a few hundred boxes) well under a second.
FEW_CANDIDATES = ["MODEL.RETINANET.TOPK_CANDIDATES_TEST", "100"]


def dataset_args(root):
    return [
        "--train-json", str(root / "annotations" / "instances_train.json"),
        "--train-images", str(root / "train"),
        "--test-json", str(root / "annotations" / "instances_val.json"),
        "--test-images", str(root / "val"),
    ]


# Small and quick: batch 2 at 128 px, one conv per subnet.
QUICK_OPTS = [
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.WARMUP_ITERS", "2",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RETINANET.NUM_CONVS", "1", "DATALOADER.NUM_WORKERS", "0", "SEED", "7",
]


def run_tool(script, *args, timeout=600, check=True):
    """`python <script> args...` from the repository root, on one thread; with `check`, it must succeed."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def read_metrics(out_dir):
    lines = (out_dir / "metrics.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@contextlib.contextmanager
def logging_restored(*names):
    """Run a tool's main in this process: the loggers it sets up (Detectron2's setup_logger stops
    their propagation, which caplog relies on) are as they were afterwards."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    try:
        yield
    finally:
        for logger, (handlers, propagate, level) in zip(loggers, saved):
            logger.handlers[:] = handlers
            logger.propagate, logger.level = propagate, level
