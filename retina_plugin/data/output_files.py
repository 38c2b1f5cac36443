"""
Outputs written whole, by one process at a time.

`OutputSet(main, *side)` locks each output (a file `<output>.lock` beside it holding the
writer's pid), hands out temporary paths in each output's folder (`.<name>.partial-<pid><ext>`,
so a Shapefile's parts follow its stem) and, on `commit()`, renames them into place: the side
outputs first, then the main output's parts, the main file last.

What that guarantees: every file is replaced by one rename, so each is either the previous one
whole or the new one whole, never partial; once the main file is new, every file of the set is.
What it does not: the renames are several, so a process killed among them (a window of a few
system calls) leaves the new side files beside the previous main file. For a Shapefile its
.dbf/.shx are then newer than its .shp; the next run replaces them all. Temporaries of a run
that died are removed by the next run that takes the lock. A lock whose pid has been reused by
an unrelated process reads as held: the error names the lock, for the user to remove.
"""
import contextlib
import errno
import glob
import logging
import os
import time
from typing import Dict, List

from ..errors import UserError

__all__ = ["OutputBusyError", "OutputSet", "acquire_lock", "release_lock"]

logger = logging.getLogger(__name__)

# Parts a Shapefile may have beside its .shp; those the new one lacks are removed with the old one.
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qpj", ".shp.xml")

# Tests kill a run at a named point of its write (tests/geo/test_output_atomic.py): with
# RETINA_TEST_PAUSE_OUTPUT=<point>, the run writes <main output>.<point>.paused there and waits
# until that file is removed.
PAUSE_VARIABLE = "RETINA_TEST_PAUSE_OUTPUT"


class OutputBusyError(UserError):
    """Another running process holds the lock of an output; the message names the output, the pid and the lock."""


def process_is_running(pid: int) -> bool:
    """Whether process `pid` exists on this machine (locks and temporaries name their writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _lock_owner(lock: str):
    """The pid in `lock`; None when there is no lock or it is still empty (being created), -1 for garbage."""
    try:
        with open(lock) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text) if text else None
    except ValueError:  # no writer of this module left it, so no live one
        return -1


def _create_lock(lock: str) -> bool:
    """Create `lock` holding this pid; False when it exists."""
    # Written under a private name, then linked: the lock appears with its pid already in it,
    # so a reader never sees an empty lock. link, like O_CREAT|O_EXCL, fails when the name exists.
    mine = f"{lock}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.remove(mine)  # left by a dead process that had our pid
    with open(mine, "x") as f:
        f.write(f"{os.getpid()}\n")
    try:
        os.link(mine, lock)
        return True
    except FileExistsError:
        return False
    except OSError as e:  # a file system without hard links: created in place, empty for an instant
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return True
    finally:
        os.remove(mine)


def acquire_lock(output: str) -> str:
    """Take `<output>.lock` for this process, taking over the lock of a process that has died. Returns the lock's path."""
    lock = output + ".lock"
    for _ in range(3):  # a lock removed or taken over between our looks: look again
        if _create_lock(lock):
            return lock
        owner = _lock_owner(lock)
        if owner is None:
            time.sleep(0.1)
            continue
        if owner > 0 and process_is_running(owner):
            raise OutputBusyError(f"{output} is being written by process {owner} (lock {lock})")
        # Moved aside, not removed: of two runs taking over the same stale lock, only one moves it.
        stale = f"{lock}.stale-{os.getpid()}"
        try:
            os.rename(lock, stale)
        except FileNotFoundError:
            continue
        if _lock_owner(stale) != owner:  # a live run took it over between our read and our move: give it back
            with contextlib.suppress(FileExistsError):
                os.link(stale, lock)
            os.remove(stale)
            continue
        os.remove(stale)
        whose = f"of process {owner}, which is no longer running" if owner > 0 else "that holds no pid"
        logger.warning(f"{lock}: taking over the lock {whose}")
    raise OutputBusyError(f"{output}: cannot take the lock {lock}; remove it if no run is writing {output}")


def release_lock(lock: str) -> None:
    if _lock_owner(lock) == os.getpid():
        os.remove(lock)


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputSet:
    """
    Outputs written together: `with OutputSet(main, *side) as out:` write to `out.temp(path)`,
    then `out.commit()`. Leaving the block without a commit removes the temporaries; the locks
    are released either way.
    """

    def __init__(self, main: str, *side: str):
        self.main = os.path.abspath(main)
        self.side = [os.path.abspath(p) for p in side if p]
        for i, output in enumerate(self.outputs):
            if output in self.outputs[:i]:
                raise UserError(f"{output}: the same file is given for two outputs")
        self.locks: List[str] = []
        self._committed = False

    @property
    def outputs(self) -> List[str]:
        return [self.main, *self.side]

    def temp(self, output: str) -> str:
        """The temporary path to write `output` to (its parts, for a Shapefile, beside it with its stem)."""
        folder, name = os.path.split(os.path.abspath(output))
        return os.path.join(folder, f".{name}.partial-{os.getpid()}{os.path.splitext(name)[1]}")

    def __enter__(self) -> "OutputSet":
        try:
            for output in sorted(self.outputs):  # one order for every run
                os.makedirs(os.path.dirname(output), exist_ok=True)
                self.locks.append(acquire_lock(output))
                self._remove_temporaries(output, any_pid=True)  # those of dead runs: we hold the lock
        except BaseException:
            self._release()
            raise
        self.pause("locked")
        return self

    def __exit__(self, *exc):
        try:
            if not self._committed:
                for output in self.outputs:
                    self._remove_temporaries(output, any_pid=False)
        finally:
            self._release()

    def _release(self):
        for lock in self.locks:
            release_lock(lock)
        self.locks = []

    def _parts(self, output: str, any_pid: bool) -> List[str]:
        """The temporaries of `output` on disk: its file and, for a Shapefile, its parts."""
        folder, name = os.path.split(output)
        stem = os.path.join(folder, glob.escape(f".{name}.partial-"))
        pattern = stem + "*" if any_pid else glob.escape(os.path.splitext(self.temp(output))[0]) + ".*"
        return glob.glob(pattern)

    def _remove_temporaries(self, output: str, any_pid: bool):
        for path in self._parts(output, any_pid):
            os.remove(path)

    def _renames(self, output: str) -> List[tuple]:
        """(temporary, final) of each file of `output`, the main file last."""
        temp = self.temp(output)
        if not os.path.exists(temp):
            raise FileNotFoundError(f"{output}: nothing was written to {temp}")
        temp_stem, final_stem = os.path.splitext(temp)[0], os.path.splitext(output)[0]
        parts = [p for p in self._parts(output, any_pid=False) if p != temp]
        return [(p, final_stem + p[len(temp_stem):]) for p in sorted(parts)] + [(temp, output)]

    def commit(self) -> None:
        """Rename every temporary into place: the side outputs, then the main output's parts, its file last."""
        renames: Dict[str, List[tuple]] = {output: self._renames(output) for output in self.outputs}
        for temp, _ in (pair for pairs in renames.values() for pair in pairs):
            _fsync(temp)
        self.pause("written")
        for output in self.side:
            for temp, final in renames[output]:
                os.replace(temp, final)
        main_renames = renames[self.main]
        if self.main.lower().endswith(".shp"):
            new = {final for _, final in main_renames}
            for ending in SHAPEFILE_PARTS:  # an old spatial index would not match the new .shp
                stale = os.path.splitext(self.main)[0] + ending
                if stale not in new and os.path.exists(stale):
                    os.remove(stale)
        for temp, final in main_renames[:-1]:
            os.replace(temp, final)
        self.pause("side-renamed")
        os.replace(*main_renames[-1])
        for folder in {os.path.dirname(p) for p in self.outputs}:
            _fsync(folder, directory=True)
        self._committed = True

    def pause(self, point: str) -> None:
        """Where a test asks (PAUSE_VARIABLE), mark `point` reached and wait until the mark is removed."""
        if os.environ.get(PAUSE_VARIABLE) != point:
            return
        marker = f"{self.main}.{point}.paused"
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        while os.path.exists(marker):
            time.sleep(0.05)
