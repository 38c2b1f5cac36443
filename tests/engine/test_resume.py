"""
Interrupted runs lose nothing (diverging ones: test_non_finite.py); bad configs and checkpoints
are refused: subprocesses killed with SIGKILL, real checkpoint files.
"""
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from retina_plugin.weights.checkpoint import RetinaCheckpointer, UnsafeCheckpointError
from retina_plugin.modeling.meta_arch import RetinaNetPlugin
from tool_runs import CONFIG, QUICK_OPTS, REPO, dataset_args


def _worker(out, *args, resume=False, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    argv = [sys.executable, str(REPO / "tests/engine/resume_worker.py")] + (["--resume"] if resume else [])
    return subprocess.Popen(argv + list(args) + ["OUTPUT_DIR", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _losses(out):
    by_iter = {}
    for line in (out / "losses.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_iter[record.pop("iteration")] = record  # a resumed run's record replaces the killed run's
    return by_iter


def _kill_when(proc, marker, timeout=300):
    start = time.time()
    while not marker.exists():
        assert proc.poll() is None, f"worker ended before {marker.name}:\n{proc.stdout.read()[-4000:]}"
        assert time.time() - start < timeout, f"no {marker.name} after {timeout} s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _finish(proc):
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    return output


def test_killed_run_resumes_with_the_uninterrupted_losses(tiny_shapes, tmp_path):
    # 8 iterations, checkpoints after iterations 2 and 5 (period 3), augmentation on (flip).
    args = ["--config-file", str(CONFIG), *dataset_args(tiny_shapes), *QUICK_OPTS,
            "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()"]
    whole, between, mid_write = tmp_path / "whole", tmp_path / "between", tmp_path / "mid_write"
    _finish(_worker(whole, *args))
    reference = _losses(whole)
    assert sorted(reference) == list(range(8))

    # Killed after iteration 6, between the checkpoints of 5 and 8.
    _kill_when(_worker(between, *args, env_extra={"RETINA_TEST_PAUSE_AFTER_ITER": "6"}), between / "losses.jsonl.paused")
    assert (between / "last_checkpoint").read_text() == "model_0000005.pth"
    log = _finish(_worker(between, *args, resume=True))
    assert "Starting training from iteration 6" in log
    resumed = _losses(between)
    for it in range(8):
        assert resumed[it] == reference[it], (it, resumed[it], reference[it])

    # Killed half-way through writing the second checkpoint: the first stays tagged and whole.
    _kill_when(_worker(mid_write, *args, env_extra={"RETINA_TEST_PAUSE_IN_SAVE": "2"}), mid_write / "save.paused")
    assert (mid_write / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (mid_write / "model_0000005.pth").exists()
    assert torch.load(mid_write / "model_0000002.pth", weights_only=True)["iteration"] == 2
    log = _finish(_worker(mid_write, *args, resume=True))
    assert "Starting training from iteration 3" in log
    resumed = _losses(mid_write)
    for it in range(8):
        assert resumed[it] == reference[it], (it, resumed[it], reference[it])


def test_weights_with_another_num_classes_load_all_but_the_class_scores(small_cfg, tmp_path, caplog):
    source = RetinaNetPlugin(small_cfg)
    RetinaCheckpointer(source, str(tmp_path)).save("three_classes")
    small_cfg.MODEL.RETINANET.NUM_CLASSES = 5
    torch.manual_seed(123)
    target = RetinaNetPlugin(small_cfg)
    fresh_scores = {k: v.clone() for k, v in target.head.cls_score.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        RetinaCheckpointer(target).load(str(tmp_path / "three_classes.pth"))
    assert "NUM_CLASSES differs: the checkpoint's class-score layer has 3 classes, the model 5" in caplog.text
    source_state, target_state = source.state_dict(), target.state_dict()
    for key in source_state:
        if key.startswith("head.cls_score."):
            assert torch.equal(target_state[key], fresh_scores[key.rsplit(".", 1)[1]]), key
        else:
            assert torch.equal(target_state[key], source_state[key]), key


@pytest.mark.parametrize(
    "opts, words",
    [
        (["MODEL.RETINA_PLUGIN.NUM_CLASSSES", "4"], "MODEL.RETINA_PLUGIN.NUM_CLASSSES"),
        (["MODEL.RETINANET.NUM_CLASSES", "four"], "MODEL.RETINANET.NUM_CLASSES"),
        (["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-2.0"], "cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA = -2.0"),
    ],
)
def test_bad_config_option_fails_before_building_naming_the_key(tmp_path, opts, words):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(CONFIG), *opts, "OUTPUT_DIR", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert words in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "log.txt").exists()  # nothing was set up or built


def test_bad_key_in_a_config_file_is_named(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f'_BASE_: "{CONFIG}"\nMODEL:\n  RETINA_PLUGIN:\n    ANCHOR_SIZE: [8, 16, 32, 64, 128]\n')
    proc = subprocess.run([sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(config) in proc.stderr and "MODEL.RETINA_PLUGIN.ANCHOR_SIZE" in proc.stderr, proc.stderr[-2000:]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_cannot_run_code_when_loaded(small_cfg, tmp_path):
    model = RetinaNetPlugin(small_cfg)
    marker = tmp_path / "code_ran"
    evil_pth = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "extra": _RunsCode(marker)}, evil_pth)
    with pytest.raises(UnsafeCheckpointError) as e:
        RetinaCheckpointer(model).load(str(evil_pth))
    assert str(evil_pth) in str(e.value)

    evil_pkl = tmp_path / "evil.pkl"
    evil_pkl.write_bytes(pickle.dumps({"model": {}, "__author__": _RunsCode(marker)}))
    with pytest.raises(UnsafeCheckpointError) as e:
        RetinaCheckpointer(model).load(str(evil_pkl))
    assert str(evil_pkl) in str(e.value) and "posix.system" in str(e.value)
    assert not marker.exists()

    # A model-zoo style .pkl (numpy arrays in a dict) loads.
    weights = {k: v.numpy() for k, v in RetinaNetPlugin(small_cfg).state_dict().items()}
    zoo_pkl = tmp_path / "zoo.pkl"
    zoo_pkl.write_bytes(pickle.dumps({"model": weights, "__author__": "someone"}))
    RetinaCheckpointer(model).load(str(zoo_pkl))
    for key, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), weights[key]), key


def test_checkpoint_write_that_fails_leaves_the_previous_one(small_cfg, tmp_path, monkeypatch):
    model = RetinaNetPlugin(small_cfg)
    checkpointer = RetinaCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("retina_plugin.weights.checkpoint.torch.save", disk_full)
    with pytest.raises(OSError):
        checkpointer.save("model_final", iteration=2)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
