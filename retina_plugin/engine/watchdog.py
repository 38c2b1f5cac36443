"""
A lost rank ends a multi-machine job fast. A process group waits for a silent peer until its
timeout, and not at all when the peer is frozen rather than dead (SIGSTOP, a cut network: no
socket closes). `Heartbeat` watches the peers through a c10d Store the ranks share and names the
rank that stopped answering within a bound of seconds, whatever the main thread is waiting on.
"""
import logging
import threading
import time
from typing import Callable, List, Optional

import torch.distributed as dist

logger = logging.getLogger(__name__)

# A rank that returned from its work adds this to its counter: from then on its silence is no loss.
FINISHED = 1 << 40


class Heartbeat:
    """
    Liveness of the `world_size` ranks of one process group, `ranks_per_machine` to a machine.

    One daemon thread of each rank adds 1 to the rank's counter in `store` (a c10d Store) every
    `timeout / 10` seconds and reads the other ranks' counters. A second daemon thread, which does
    no I/O, declares a rank lost when its counter has not moved for `timeout` seconds, and
    `store_host` lost when the store has not answered for `timeout` seconds (a store call to a
    frozen host blocks without end), then calls `on_lost(message)` once. Counters, not
    timestamps: the machines' clocks need not agree.
    """

    def __init__(
        self, store, rank: int, world_size: int, ranks_per_machine: int, timeout: float,
        on_lost: Callable[[str], None], store_host: str = "rank 0 (machine 0)",
    ):  # fmt: skip
        self.store, self.rank, self.world_size = store, rank, world_size
        self.ranks_per_machine, self.timeout = ranks_per_machine, timeout
        self.on_lost, self.store_host = on_lost, store_host
        self.interval = max(timeout / 10, 0.05)
        now = time.monotonic()
        self._counters: List[int] = [-1] * world_size
        self._moved: List[float] = [now] * world_size
        self._store_answered = now
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self.message: Optional[str] = None
        self._threads = [
            threading.Thread(target=self._beat, name="heartbeat", daemon=True),
            threading.Thread(target=self._watch, name="heartbeat-watch", daemon=True),
        ]

    def start(self) -> "Heartbeat":
        for thread in self._threads:
            thread.start()
        return self

    def finish(self) -> None:
        """This rank is done: the others stop watching it, and it stops watching them."""
        self._stop.set()
        self._threads[0].join(self.timeout)
        try:
            self.store.add(self._key(self.rank), FINISHED)
        except dist.DistError:
            pass  # the store's host is gone: nobody is left to watch this rank

    def wait(self, seconds: float) -> Optional[str]:
        """The message naming the lost rank(s), once there is one, or None after `seconds`."""
        self._lost.wait(seconds)
        return self.message

    def describe(self, rank: int) -> str:
        return f"rank {rank} (machine {rank // self.ranks_per_machine})"

    def _key(self, rank: int) -> str:
        return f"retina_plugin/heartbeat/{rank}"

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.add(self._key(self.rank), 1)
                counters = [self.store.add(self._key(r), 0) for r in range(self.world_size)]  # add 0: a read that never blocks
            except dist.DistError as e:  # the store's host closed the connection
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self._declare(f"{self.store_host} stopped answering: the rendezvous store it hosts failed ({reason})")
                return
            now = time.monotonic()
            with self._lock:
                self._store_answered = now
                for r, counter in enumerate(counters):
                    if counter != self._counters[r]:
                        self._counters[r], self._moved[r] = counter, now
            self._stop.wait(self.interval)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                store_silence = now - self._store_answered
                silent = {
                    r: now - self._moved[r] for r in range(self.world_size)
                    if r != self.rank and self._counters[r] < FINISHED
                }  # fmt: skip
            if store_silence > self.timeout:
                self._declare(
                    f"{self.store_host} stopped answering {store_silence:.0f} s ago: its rendezvous store is silent "
                    f"(heartbeat timeout {self.timeout:g} s)"
                )
                return
            lost = sorted(r for r, age in silent.items() if age > self.timeout)
            if lost:
                names = ", ".join(self.describe(r) for r in lost)
                self._declare(
                    f"{names} stopped answering {max(silent[r] for r in lost):.0f} s ago "
                    f"(heartbeat timeout {self.timeout:g} s)"
                )
                return

    def _declare(self, message: str) -> None:
        with self._lock:
            if self.message is not None:
                return
            self.message = message
        logger.error(message)
        self.on_lost(message)  # may end the process: `wait` returns only after it
        self._lost.set()
