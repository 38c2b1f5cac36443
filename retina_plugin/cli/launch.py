"""
Detectron2's `launch` for the training tools, on a `LaunchPlan` (`cluster`: the flags or the
launcher's environment). With several processes, the process group's timeout is --dist-timeout
and every rank runs a `Heartbeat` (retina_plugin.engine.watchdog): when a rank is killed or
frozen, the others end within --heartbeat-timeout with one line naming it, status 2, instead
of waiting for the timeout. Checkpoints are written whole or not at all, so `--resume` on every
machine continues from the last one.
"""
import dataclasses
import datetime
import functools
import os
import sys
from urllib.parse import urlparse

import torch.distributed as dist
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import _distributed_worker, _find_free_port
from detectron2.utils import comm
from torch.multiprocessing.spawn import ProcessExitedException

from ..engine.watchdog import Heartbeat
from .cluster import LaunchPlan

# A process that ends the job on a lost rank has printed its one line and exits with this status.
LOST_RANK_STATUS = 2


@dataclasses.dataclass(frozen=True)
class Watch:
    """What each rank needs to watch the others: the tool's name, the rendezvous, the bound."""

    prog: str
    dist_url: str
    heartbeat_timeout: float
    store_host: str


def launch(main, plan: LaunchPlan, args, prog: str):
    """
    `main(args)` in this machine's processes of `plan`: started here by Detectron2's launch, or
    this process alone where the launcher started it as one rank (`plan.local_rank`).
    """
    if plan.world_size == 1:
        return main(args)
    dist_url = f"tcp://127.0.0.1:{_find_free_port()}" if plan.dist_url == "auto" else plan.dist_url
    watch = Watch(prog, dist_url, args.heartbeat_timeout, _store_host(dist_url))
    timeout = datetime.timedelta(seconds=args.dist_timeout)
    if plan.local_rank is not None:
        # Detectron2's worker, as launch runs it in each process it starts: the process group,
        # the machine's local group, a first barrier, then main.
        return _distributed_worker(
            plan.local_rank, _watched, plan.world_size, plan.processes_per_machine, plan.machine_rank, dist_url,
            (main, args, watch), timeout,
        )  # fmt: skip
    try:
        return detectron2_launch(
            _watched, plan.processes_per_machine, num_machines=plan.num_machines, machine_rank=plan.machine_rank,
            dist_url=dist_url, args=(main, args, watch), timeout=timeout,
        )  # fmt: skip
    except ProcessExitedException as e:
        if e.exit_code == LOST_RANK_STATUS:  # the process printed its one line
            raise SystemExit(LOST_RANK_STATUS) from None
        raise


def _watched(main, args, watch: Watch):
    """`main(args)` in one rank of the group, its heartbeat beating until every rank has finished."""
    heartbeat = Heartbeat(
        _heartbeat_store(watch, comm.get_world_size()), comm.get_rank(), comm.get_world_size(), comm.get_local_size(),
        watch.heartbeat_timeout, functools.partial(_end_job, watch.prog), watch.store_host,
    ).start()  # fmt: skip
    try:
        result = main(args)
    except RuntimeError:
        # A collective fails as soon as a peer's socket closes: the heartbeat names the peer (and
        # ends this process) within its bound; an error of this rank's own keeps its traceback.
        heartbeat.wait(watch.heartbeat_timeout + 2 * heartbeat.interval)
        raise
    heartbeat.finish()
    comm.synchronize()  # the store's host stays up until every rank has finished
    return result


def _end_job(prog: str, message: str) -> None:
    """End this process with one line: the main thread may be blocked in a collective for minutes."""
    sys.stdout.flush()
    sys.stderr.write(
        f"{prog}: error: {message}; the job stops here: start it again with --resume on every machine "
        "to continue from the last checkpoint\n"
    )
    sys.stderr.flush()
    os._exit(LOST_RANK_STATUS)


def _heartbeat_store(watch: Watch, world_size: int):
    """A connection of this rank's own to the rendezvous store, whose calls wait at most the heartbeat timeout."""
    url = urlparse(watch.dist_url)
    if url.scheme == "file":
        return dist.FileStore(url.path + ".heartbeat", world_size)
    host, port = (url.hostname, url.port) if url.scheme == "tcp" else (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    timeout = datetime.timedelta(seconds=watch.heartbeat_timeout)
    return dist.TCPStore(host, port, is_master=False, timeout=timeout, wait_for_workers=False)


def _store_host(dist_url: str) -> str:
    """Who hosts the rendezvous store of `dist_url`, as the message that it stopped answering names it."""
    url = urlparse(dist_url)
    if url.scheme == "file":
        return f"the rendezvous file {url.path}"
    if url.scheme == "env" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return f"machine 0 (torchrun's agent, host of the rendezvous store {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']})"
    return "rank 0 (machine 0)"
