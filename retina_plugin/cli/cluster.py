"""
Where the training tools' processes come from: Detectron2's flags (--num-gpus, --num-machines,
--machine-rank, --dist-url) typed on each machine, or the environment of the job's launcher, so
that one command line serves every machine:

- `srun` (SLURM), one task per node: machine rank SLURM_NODEID of SLURM_STEP_NUM_NODES machines,
  --num-gpus processes started on each; one task per GPU (SLURM_STEP_NUM_TASKS a multiple of the
  nodes): each task is one rank (SLURM_PROCID), nothing is started. The rendezvous is MASTER_ADDR,
  else the first host of the step's node list; MASTER_PORT, else a port of the job's id.
- `torchrun`: each process is one rank (RANK of WORLD_SIZE, LOCAL_RANK of LOCAL_WORLD_SIZE on
  machine GROUP_RANK), joining the group through MASTER_ADDR:MASTER_PORT (`env://`).

A flag given on the command line wins over the environment. docs/distributed.md has the
`sbatch` script and the `torchrun` line.
"""
import argparse
import dataclasses
import logging
import os
import re
from typing import Mapping, Optional

from ..errors import UserError

logger = logging.getLogger(__name__)

# Detectron2's launch flags, by their argparse names; all but --num-gpus are LaunchPlan's fields too.
LAUNCH_FLAGS = ("num_gpus", "num_machines", "machine_rank", "dist_url")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SRUN_VARIABLES = ("SLURM_STEP_NUM_NODES", "SLURM_STEP_NUM_TASKS", "SLURM_NODEID", "SLURM_PROCID", "SLURM_LOCALID")


class LaunchError(UserError):
    """The launch flags and the launcher's environment do not describe one process group."""


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """
    The processes of one training job: `processes_per_machine` on each of `num_machines`, this
    being machine `machine_rank`, meeting at `dist_url`. `local_rank` is set where the launcher
    already started this process as one rank (torchrun, srun with a task per GPU): it starts no
    other. `source` says where the values came from, for messages.
    """

    processes_per_machine: int
    num_machines: int
    machine_rank: int
    dist_url: str
    local_rank: Optional[int] = None
    source: str = "the command line"

    @property
    def world_size(self) -> int:
        return self.processes_per_machine * self.num_machines


def add_launch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--dist-timeout and --heartbeat-timeout, next to Detectron2's launch flags."""
    parser.add_argument(
        "--dist-timeout", type=float, default=300, metavar="SECONDS",
        help="the process group's timeout: a collective that waits longer fails (default 300 s; Detectron2's is 30 min)",
    )  # fmt: skip
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=60, metavar="SECONDS",
        help="with several processes: a rank that has not answered for this long is lost, and the job stops "
        "with one line naming it (default 60 s; under --dist-timeout)",
    )
    return parser


def given_flags(parser_factory, argv) -> set:
    """The launch flags (LAUNCH_FLAGS) that `argv` gives, parsed as the tool's parser parses it."""
    parser = parser_factory()
    parser.set_defaults(**{flag: None for flag in LAUNCH_FLAGS})
    parsed = vars(parser.parse_args(argv))
    return {flag for flag in LAUNCH_FLAGS if parsed.get(flag) is not None}


def launch_plan(args, given: set, environ: Mapping[str, str] = os.environ) -> LaunchPlan:
    """
    The plan of `args` (Detectron2's launch flags), filled from torchrun's or srun's environment
    where the flag is not in `given`; a LaunchError where they contradict each other.
    """
    if all(name in environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        plan = _torchrun_plan(environ)
    elif "SLURM_STEP_NUM_TASKS" in environ:
        plan = _srun_plan(environ, args.num_gpus)
    else:
        plan = LaunchPlan(args.num_gpus, args.num_machines, args.machine_rank, args.dist_url)
        nodes = environ.get("SLURM_NNODES", "1")
        if nodes.isdigit() and int(nodes) > 1:
            logger.warning(
                f"this SLURM job has {nodes} nodes but the tool was not started by srun: it trains "
                "on this machine alone; start it with `srun` in the batch script (docs/distributed.md)"
            )
    if plan.local_rank is not None and "num_gpus" in given and args.num_gpus != 1:
        raise LaunchError(
            f"--num-gpus {args.num_gpus} under {plan.source}, which started {plan.processes_per_machine} process(es) "
            f"on this machine, each one rank of {plan.world_size}: --num-gpus would start {args.num_gpus} more in each; "
            f"leave --num-gpus out (set the processes per machine with {plan.source}'s own option)"
        )
    plan = dataclasses.replace(plan, **{flag: getattr(args, flag) for flag in LAUNCH_FLAGS[1:] if flag in given})
    _check(plan, args)
    return plan


def _check(plan: LaunchPlan, args) -> None:
    if plan.processes_per_machine < 1 or plan.num_machines < 1:
        raise LaunchError(
            f"{plan.processes_per_machine} process(es) per machine on {plan.num_machines} machine(s) "
            f"(from {plan.source}): both must be at least 1"
        )
    if not 0 <= plan.machine_rank < plan.num_machines:
        raise LaunchError(
            f"machine rank {plan.machine_rank} of {plan.num_machines} machine(s) (from {plan.source}): "
            f"it must be 0 to {plan.num_machines - 1}"
        )
    if plan.world_size > 1 and plan.dist_url == "auto" and plan.num_machines > 1:
        raise LaunchError(f"--dist-url auto picks a port on one machine, not {plan.num_machines}: give tcp://HOST:PORT")
    if plan.world_size > 1 and not args.heartbeat_timeout < args.dist_timeout:
        raise LaunchError(
            f"--heartbeat-timeout {args.heartbeat_timeout:g} must be under --dist-timeout {args.dist_timeout:g}: "
            "a lost rank is named before the process group gives up"
        )
    for flag, seconds in (("--heartbeat-timeout", args.heartbeat_timeout), ("--dist-timeout", args.dist_timeout)):
        if not seconds > 0:
            raise LaunchError(f"{flag} {seconds:g} must be over 0 seconds")


def _integer(environ: Mapping[str, str], name: str, launcher: str) -> int:
    if name not in environ:
        raise LaunchError(f"{launcher} environment without {name}: start the tool with {launcher}, or unset its variables")
    try:
        return int(environ[name])
    except ValueError:
        raise LaunchError(f"{name}={environ[name]!r} is not an integer") from None


def _torchrun_plan(environ: Mapping[str, str]) -> LaunchPlan:
    rank, world_size, local_rank, local_world_size = (
        _integer(environ, name, "torchrun") for name in TORCHRUN_VARIABLES[:4]
    )  # fmt: skip
    if not environ.get("MASTER_ADDR"):
        raise LaunchError("torchrun environment without MASTER_ADDR: start the tool with torchrun, or unset RANK and WORLD_SIZE")
    _integer(environ, "MASTER_PORT", "torchrun")
    machine = int(environ.get("GROUP_RANK", rank // max(local_world_size, 1)))
    if local_world_size < 1 or world_size % local_world_size or rank != machine * local_world_size + local_rank:
        raise LaunchError(
            f"torchrun's RANK {rank} of WORLD_SIZE {world_size} is not LOCAL_RANK {local_rank} of LOCAL_WORLD_SIZE "
            f"{local_world_size} on machine {machine}: start the same --nproc-per-node on every machine"
        )
    return LaunchPlan(local_world_size, world_size // local_world_size, machine, "env://", local_rank, "torchrun")


def _srun_plan(environ: Mapping[str, str], num_gpus: int) -> LaunchPlan:
    nodes, tasks, node, task, local_task = (_integer(environ, name, "srun") for name in SRUN_VARIABLES)
    url = f"tcp://{_slurm_address(environ)}:{_slurm_port(environ)}"
    if tasks == nodes:
        return LaunchPlan(num_gpus, nodes, node, url, source="srun")
    per_node = tasks // nodes
    if tasks % nodes or task != node * per_node + local_task:
        raise LaunchError(
            f"srun started {tasks} task(s) on {nodes} node(s), task {task} being task {local_task} of node {node}: "
            "start one task per node (--ntasks-per-node 1, --num-gpus N) or the same number on every node, "
            "in blocks (--ntasks-per-node N --distribution block)"
        )
    return LaunchPlan(per_node, nodes, node, url, local_task, "srun")


def _slurm_address(environ: Mapping[str, str]) -> str:
    if environ.get("MASTER_ADDR"):
        return environ["MASTER_ADDR"]
    for name in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        if environ.get(name):
            return first_host(environ[name])
    raise LaunchError("srun environment without SLURM_STEP_NODELIST or MASTER_ADDR: set MASTER_ADDR to machine 0's address")


def _slurm_port(environ: Mapping[str, str]) -> int:
    if environ.get("MASTER_PORT"):
        return _integer(environ, "MASTER_PORT", "srun")
    # Every node computes the same port from the job's id, in a range clear of the system's ephemeral ports.
    return 15000 + _integer(environ, "SLURM_JOB_ID", "srun") % 15000


def first_host(nodelist: str) -> str:
    """
    The first host of a SLURM node list, as `scontrol show hostnames` lists it first:
    `node[01-04,07],gpu7` -> node01, `rack[2-3]-n[5-6]` -> rack2-n5.
    """
    match = re.match(r"([^,\[]+|\[[^\]]*\])+", nodelist.strip())
    if match is None:
        raise LaunchError(f"SLURM node list {nodelist!r} has no host")
    host = re.sub(r"\[([^\]\-,]*)[^\]]*\]", r"\1", match.group(0))
    if "[" in host or "]" in host or not host:
        raise LaunchError(f"SLURM node list {nodelist!r}: cannot read its first host")
    return host
