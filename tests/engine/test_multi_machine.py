"""
tools/train_net.py on two "machines" of 127.0.0.1, each a session of real processes started as
srun and torchrun start them (their environment variables, no flags), GLOO on the CPU: they train
as one process group; a machine killed (SIGKILL) or frozen (SIGSTOP) ends the other within the
heartbeat's bound with one line naming the lost rank; --resume then continues from the last
checkpoint.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tool_runs import CONFIG, QUICK_OPTS, REPO

HEARTBEAT_TIMEOUT = 10  # seconds: --heartbeat-timeout of these runs
DIST_TIMEOUT = 60  # seconds: --dist-timeout; a lost rank must be named well before it
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_environment(launcher: str, machine: int, port: int) -> dict:
    """What srun (one task per node) or torchrun (one process per node) sets for machine `machine` of 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in LAUNCHER_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MASTER_PORT=str(port))
    if launcher == "srun":
        env.update(
            SLURM_JOB_ID="4242", SLURM_STEP_NUM_NODES="2", SLURM_STEP_NUM_TASKS="2", SLURM_NODEID=str(machine),
            SLURM_PROCID=str(machine), SLURM_LOCALID="0", SLURM_STEP_NODELIST="127.0.0.1",
        )  # fmt: skip
    else:
        env.update(
            RANK=str(machine), WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", GROUP_RANK=str(machine),
            MASTER_ADDR="127.0.0.1",
        )  # fmt: skip
    return env


def train_args(tiny_shapes, out, *extra):
    """The command line of each machine; `extra`: flags (--resume) then KEY VALUE options."""
    flags = [arg for arg in extra if arg.startswith("--")]
    return [
        *flags, "--config-file", str(CONFIG), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT), "--dist-timeout", str(DIST_TIMEOUT),
        "--train-json", str(tiny_shapes / "annotations" / "instances_train.json"), "--train-images", str(tiny_shapes / "train"),
        *QUICK_OPTS, "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out), *(arg for arg in extra if arg not in flags),
    ]  # fmt: skip


class Machine:
    """One machine's tools/train_net.py: a session of its own, so that killing it kills all its processes."""

    def __init__(self, env, args, log_prefix):
        self.stdout, self.stderr = f"{log_prefix}.out", f"{log_prefix}.err"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tools" / "train_net.py"), *args], cwd=REPO, env=env,
                stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip

    def signal(self, signum):
        os.killpg(self.proc.pid, signum)

    def log(self) -> str:
        with open(self.stderr) as err:
            return err.read()[-6000:]

    def error_line(self) -> str:
        """It ended with status 2 and one `train_net: error:` line, no traceback: that line."""
        stderr = open(self.stderr).read()
        assert self.proc.returncode == 2, self.log()
        assert "Traceback" not in stderr, self.log()
        errors = [line for line in stderr.splitlines() if line.startswith("train_net: error: ")]
        assert len(errors) == 1, self.log()
        return errors[0]

    def end(self):
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def machines():
    """Start machines with machines.start(...); whatever still runs at the end is killed."""

    class Machines(list):
        def start(self, *args):
            self.append(Machine(*args))
            return self[-1]

    started = Machines()
    yield started
    for machine in started:
        machine.end()


def start_two(machines, launcher, tiny_shapes, out, tmp_path, *extra):
    port = free_port()
    return [
        machines.start(launcher_environment(launcher, i, port), train_args(tiny_shapes, out, *extra), tmp_path / f"{launcher}{i}")
        for i in (0, 1)
    ]  # fmt: skip


def wait_for_checkpoint(path, group, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.exists():
        for machine in group:
            assert machine.proc.poll() is None, f"a machine ended before {path.name}:\n{machine.log()}"
        assert time.monotonic() < deadline, f"no {path.name} after {seconds} s:\n{group[0].log()}"
        time.sleep(0.2)


def seconds_to_end(machine, since) -> float:
    machine.proc.wait(timeout=DIST_TIMEOUT * 2)
    return time.monotonic() - since


# The same fault under torchrun's environment runs with the slow tests (the suite's time); the
# frozen-machine test below covers torchrun by default.
@pytest.mark.parametrize("launcher", ["srun", pytest.param("torchrun", marks=pytest.mark.slow)])
def test_a_killed_machine_is_named_by_the_other_within_the_bound_then_resume_continues(launcher, machines, tiny_shapes, tmp_path):
    out = tmp_path / "run"
    group = start_two(machines, launcher, tiny_shapes, out, tmp_path, "SOLVER.MAX_ITER", "10000")
    wait_for_checkpoint(out / "model_0000003.pth", group)
    group[1].signal(signal.SIGKILL)
    elapsed = seconds_to_end(group[0], time.monotonic())
    print(f"{launcher}: machine 1 killed, machine 0 ended {elapsed:.1f} s later")

    line = group[0].error_line()
    assert line.startswith("train_net: error: rank 1 (machine 1) stopped answering"), line
    assert "start it again with --resume on every machine" in line
    assert elapsed < 2 * HEARTBEAT_TIMEOUT < DIST_TIMEOUT, elapsed

    # The last checkpoint is whole: --resume on both machines continues after it.
    saved = torch.load(out / (out / "last_checkpoint").read_text().strip(), map_location="cpu", weights_only=False)
    start = saved["iteration"] + 1
    assert start >= 4
    resumed = start_two(machines, launcher, tiny_shapes, out, tmp_path, "--resume", "SOLVER.MAX_ITER", str(start + 2))
    for machine in resumed:
        assert machine.proc.wait(timeout=300) == 0, machine.log()
    assert f"Starting training from iteration {start}" in (out / "log.txt").read_text()
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == start + 1


# Rank 1 frozen (rank 0, the store's host, frozen is the default case) runs with the slow tests: the suite's time.
@pytest.mark.parametrize("launcher, frozen", [("torchrun", 0), pytest.param("srun", 1, marks=pytest.mark.slow)])
def test_a_frozen_machine_is_named_by_the_other_within_the_bound(launcher, frozen, machines, tiny_shapes, tmp_path):
    # Frozen, nothing closes a socket: the survivor's collective would wait for --dist-timeout.
    # Rank 0 also hosts the rendezvous store, which then stops answering too.
    out = tmp_path / "run"
    group = start_two(machines, launcher, tiny_shapes, out, tmp_path, "SOLVER.MAX_ITER", "10000")
    wait_for_checkpoint(out / "model_0000003.pth", group)
    group[frozen].signal(signal.SIGSTOP)
    elapsed = seconds_to_end(group[1 - frozen], time.monotonic())
    print(f"{launcher}: machine {frozen} frozen, machine {1 - frozen} ended {elapsed:.1f} s later")

    line = group[1 - frozen].error_line()
    assert line.startswith(f"train_net: error: rank {frozen} (machine {frozen}) stopped answering"), line
    assert elapsed < 2 * HEARTBEAT_TIMEOUT < DIST_TIMEOUT, elapsed


def test_torchrun_two_processes_train_as_one_group_of_two(tiny_shapes, tmp_path):
    out = tmp_path / "torchrun"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in LAUNCHER_VARIABLES}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
         "tools/train_net.py", *train_args(tiny_shapes, out, "SOLVER.MAX_ITER", "3")],
        cwd=REPO, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    log = (out / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    assert log.count("Starting training from iteration 0") == 1
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"] == 2


@pytest.mark.parametrize("tool", ["train_net", "lazyconfig_train_net"])
def test_num_gpus_under_torchrun_is_refused_in_one_line(tool, tmp_path):
    config = str(CONFIG) if tool == "train_net" else str(CONFIG.with_suffix(".py"))
    env = launcher_environment("torchrun", 0, free_port())
    proc = subprocess.run(
        [sys.executable, f"tools/{tool}.py", "--num-gpus", "2", "--config-file", config], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"{tool}: error: --num-gpus 2 under torchrun, which started 1 process(es) on this machine, each one rank of 2: "
        "--num-gpus would start 2 more in each; leave --num-gpus out (set the processes per machine with torchrun's own option)"
    )
