"""retina_plugin.engine.watchdog.Heartbeat on a real c10d store (HashStore), ranks as threads of this process."""
import time

import torch.distributed as dist

from retina_plugin.engine.watchdog import Heartbeat

TIMEOUT = 2.0  # seconds: long enough that a loaded 2-core machine still runs each thread in time


def heartbeat(store, rank, world_size, lost, ranks_per_machine=1):
    return Heartbeat(store, rank, world_size, ranks_per_machine, TIMEOUT, lost.append)


def test_a_rank_that_never_beats_is_named_after_the_timeout_and_only_once():
    store, lost = dist.HashStore(), []
    start = time.monotonic()  # before the watchers start: their timeout runs from their start
    beating = [heartbeat(store, rank, 4, lost, ranks_per_machine=2).start() for rank in (0, 1)]
    message = beating[0].wait(10 * TIMEOUT)
    elapsed = time.monotonic() - start
    assert message is not None and message.startswith("rank 2 (machine 1), rank 3 (machine 1) stopped answering"), message
    assert "heartbeat timeout 2 s" in message, message
    assert TIMEOUT <= elapsed < 4 * TIMEOUT, elapsed
    beating[1].wait(10 * TIMEOUT)
    time.sleep(3 * beating[0].interval)
    # Each watching rank's verdict once, naming the same ranks; none about the ranks that beat.
    assert len(lost) == 2 and all(m.split(" stopped")[0] == message.split(" stopped")[0] for m in lost), lost


def test_ranks_that_beat_or_finished_are_never_lost():
    store, lost = dist.HashStore(), []
    ranks = [heartbeat(store, rank, 3, lost).start() for rank in range(3)]
    ranks[2].finish()  # done early: its silence from now on is no loss
    assert ranks[0].wait(4 * TIMEOUT) is None and ranks[1].wait(0) is None
    assert lost == []
    for rank in ranks[:2]:
        rank.finish()
    assert store.add("retina_plugin/heartbeat/0", 0) > 1 << 40
