"""
RetinaCheckpointer (retina_plugin/weights/checkpoint.py) on every weights path: pycls' `.pyth` is
read weights-only even when TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD asks torch for plain pickles, and
the temporaries a killed checkpoint write leaves are removed when the next run starts.
"""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retina_plugin.modeling.meta_arch import RetinaNetPlugin
from retina_plugin.weights.checkpoint import RetinaCheckpointer

REPO = Path(__file__).resolve().parents[2]

# Written in its own process so that the pickle names a class the loading process has never seen.
_EVIL_PYTH = """
import os, sys, torch
class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"model_state": {"w": torch.zeros(1)}, "extra": RunsCode()}, sys.argv[1])
"""


def test_a_pyth_is_read_weights_only_whatever_the_environment_says(small_cfg, tmp_path):
    # pycls' format loads: model_state, num_batches_tracked dropped.
    source, target = RetinaNetPlugin(small_cfg), RetinaNetPlugin(small_cfg)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    torch.save({"model_state": state, "epoch": 3}, tmp_path / "pycls.pyth")
    RetinaCheckpointer(target).load(str(tmp_path / "pycls.pyth"))
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key

    evil, marker = tmp_path / "evil.pyth", tmp_path / "code_ran"
    subprocess.run([sys.executable, "-c", _EVIL_PYTH, str(evil), str(marker)], check=True, timeout=120)
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--config-file", str(REPO / "configs" / "shapes_R18_cpu.yaml"),
         "--input", str(image), "--output", str(tmp_path / "out"), "MODEL.WEIGHTS", str(evil), "MODEL.DEVICE", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"demo: error: {evil}: not loadable with torch.load(weights_only=True)"), last
    assert not marker.exists()


# A checkpoint write that is killed midway: the pickling of one value blocks until the kill.
_KILLED_WRITER = """
import sys, time, torch
from retina_plugin.weights.checkpoint import RetinaCheckpointer
class Blocks:
    def __reduce__(self):
        print("writing", flush=True)
        time.sleep(600)
RetinaCheckpointer(torch.nn.Linear(1, 1), sys.argv[1]).save("model_0000019", blocks=Blocks())
"""


def test_the_temporaries_of_a_killed_write_are_removed_when_a_run_starts(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(out)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        assert writer.stdout.readline().strip() == "writing"
        (temporary,) = [p.name for p in out.iterdir()]
        assert re.fullmatch(rf"model_0000019\.pth\.{writer.pid}\.[a-z0-9_]+\.tmp", temporary), temporary
        RetinaCheckpointer(None, save_dir=str(out))  # the writer is alive: its file stays
        assert (out / temporary).exists()
    finally:
        writer.kill()
        writer.wait()

    # Another dead writer's last_checkpoint, one named without a pid, and files that are not ours.
    dead_pid = writer.pid
    (out / f"last_checkpoint.{dead_pid}.ab12cd_3.tmp").write_text("model_0000019.pth")
    (out / "model_0000009.pth.k3j_9x2q.tmp").write_bytes(b"partial")
    os.utime(out / "model_0000009.pth.k3j_9x2q.tmp", (0, 0))
    live = f"model_0000029.pth.{os.getpid()}.zz99zz99.tmp"
    for name in ("model_final.pth", "notes.tmp", "metrics.json.tmp", live):
        (out / name).write_bytes(b"kept")
    RetinaCheckpointer(None, save_dir=str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(["metrics.json.tmp", "model_final.pth", "notes.tmp", live])
