"""
metrics.json after --resume has each iteration once: a run killed after it wrote metrics past
its last checkpoint, then resumed (tools/train_net.py), and a LazyConfig run resumed from an
earlier checkpoint (tools/lazyconfig_train_net.py). Real subprocesses and files.
"""
import json
import os
import signal
import subprocess
import sys
import time

from retina_plugin.engine.metrics_file import drop_metrics_after
from tool_runs import CONFIG, QUICK_OPTS, REPO, dataset_args, read_metrics, run_tool


def _training_iterations(out):
    return [m["iteration"] for m in read_metrics(out) if "total_loss" in m]


def test_train_net_resumed_after_a_kill_writes_each_iteration_once(tiny_shapes, tmp_path):
    # Detectron2's DefaultTrainer writes metrics every 20 iterations: 24 iterations, a checkpoint
    # after iteration 14, metrics at 19, killed after 20; the resumed run trains 15..23 again.
    out = tmp_path / "run"
    args = ["--config-file", str(CONFIG), *dataset_args(tiny_shapes), *QUICK_OPTS,
            "SOLVER.MAX_ITER", "24", "SOLVER.CHECKPOINT_PERIOD", "15", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", RETINA_TEST_PAUSE_AFTER_ITER="20")
    worker = subprocess.Popen([sys.executable, str(REPO / "tests/engine/resume_worker.py"), *args], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    start = time.monotonic()
    while not (out / "losses.jsonl.paused").exists():
        assert worker.poll() is None and time.monotonic() - start < 300, "the worker did not reach iteration 20"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert (out / "last_checkpoint").read_text() == "model_0000014.pth"
    assert _training_iterations(out) == [19]

    run_tool("tools/train_net.py", "--resume", *args)
    assert _training_iterations(out) == [19, 23]
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 15" in log
    assert "metrics.json: dropped 1 line(s) after iteration 14, which this run writes again" in log


def test_lazyconfig_resumed_from_an_earlier_checkpoint_writes_each_iteration_once(tiny_shapes, tmp_path):
    out = tmp_path / "lazy"
    common = ["--config-file", "configs/shapes_R18_cpu.py",
              "--train-json", str(tiny_shapes / "annotations" / "instances_train.json"), "--train-images", str(tiny_shapes / "train"),
              "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "model.head.num_convs=1",
              "dataloader.train.mapper.augmentations.0.short_edge_length=[128]", "dataloader.train.mapper.augmentations.0.max_size=128",
              "train.checkpointer.period=2", "train.log_period=1", "train.seed=7", "train.eval_period=0",
              f"train.output_dir={out}"]  # fmt: skip
    run_tool("tools/lazyconfig_train_net.py", *common, "train.max_iter=4")
    assert _training_iterations(out) == [0, 1, 2, 3]
    # Back to the checkpoint after iteration 1, as a user does to leave a run that went wrong.
    (out / "last_checkpoint").write_text("model_0000001.pth")
    proc = run_tool("tools/lazyconfig_train_net.py", "--resume", *common, "train.max_iter=6")
    assert "Starting training from iteration 2" in proc.stdout + proc.stderr
    assert _training_iterations(out) == [0, 1, 2, 3, 4, 5]


def test_cut_keeps_earlier_lines_and_the_open_writer_appends_after_them(tmp_path):
    path = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "total_loss": 1.0 / (i + 1)}) + "\n" for i in range(6)]
    path.write_text("".join(lines) + '{"iteration": 6, "total_lo')  # the last line torn by a kill
    writer = open(path, "a")  # as Detectron2's JSONWriter holds it while the trainer resumes
    assert drop_metrics_after(str(path), 3) == 3
    writer.write(json.dumps({"iteration": 4, "total_loss": 0.5}) + "\n")
    writer.close()
    assert path.read_text() == "".join(lines[:4]) + '{"iteration": 4, "total_loss": 0.5}\n'
    assert drop_metrics_after(str(path), 4) == 0 and drop_metrics_after(str(tmp_path / "none.json"), 4) == 0
