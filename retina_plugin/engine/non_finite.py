"""
Training that goes non-finite stops in one line. A loss that is inf or NaN ends every rank with
`NonFiniteLossError` (a UserError: the tools print `<tool>: error: ...`, status 2) naming the
iteration and the loss, instead of Detectron2's FloatingPointError traceback. The broken model is
not evaluated and no final checkpoint is written; `last_checkpoint` names the last checkpoint
whose weights still gave a finite loss, and the run's later checkpoints, which hold the weights
that gave the non-finite one, are kept but no longer named by `last_checkpoint`.

Both trainers use the three parts: `FiniteLosses` (their SimpleTrainer / AMPTrainer),
`EvalAfterFinishedTraining` (for Detectron2's EvalHook) and `LastGoodCheckpoint` (a hook on
every rank).
"""
import logging
import math
import os
import sys
from typing import Dict, List, Optional, Tuple

from detectron2.engine import HookBase, hooks
from detectron2.utils import comm

from ..errors import UserError

logger = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """A training loss was inf or NaN: which, at which iteration (on which rank), and the checkpoint left."""

    def __init__(self, iteration: int, losses: Dict[str, float], rank: Optional[int] = None, first_suspect: int = 0):
        super().__init__(iteration, losses, rank, first_suspect)
        self.iteration, self.losses, self.rank = iteration, losses, rank
        # The checkpoints of iterations >= first_suspect hold weights that gave no checked finite loss.
        self.first_suspect = first_suspect
        self.checkpoint_note = ""
        self.hint = ""

    def __str__(self):
        bad = ", ".join(f"{name} is {value}" for name, value in self.losses.items() if not math.isfinite(value))
        finite = ", ".join(f"{name} {value:.4g}" for name, value in self.losses.items() if math.isfinite(value))
        where = f" on rank {self.rank}" if self.rank is not None else ""
        parts = [f"{bad}{f' ({finite})' if finite else ''} at iteration {self.iteration}{where}: training stopped, not evaluated"]
        return "; ".join(part for part in parts + [self.checkpoint_note, self.hint] if part)


def check_losses(loss_dict, iteration: int, gather_period: int) -> None:
    """
    Raise NonFiniteLossError on every rank if a loss of `loss_dict` (name -> scalar tensor) is not
    finite on any rank. Collective when training in several processes: every rank must call it.
    """
    values = {name: float(loss.detach()) for name, loss in loss_dict.items()}
    per_rank = comm.all_gather(values) if comm.get_world_size() > 1 else [values]
    for rank, losses in enumerate(per_rank):
        if not all(math.isfinite(v) for v in losses.values()):
            raise NonFiniteLossError(
                iteration, losses, rank if len(per_rank) > 1 else None, first_suspect=iteration - gather_period
            )


class FiniteLosses:
    """
    For Detectron2's SimpleTrainer and AMPTrainer: the losses are checked on every rank before
    Detectron2 writes them (`_write_metrics`, before the optimizer step). Detectron2's own check
    runs on the main process only, and raises a FloatingPointError there that the other ranks never see.
    """

    def _write_metrics(self, loss_dict, data_time: float, prefix: str = "", iter: Optional[int] = None) -> None:
        iteration = self.iter if iter is None else iter
        if (iteration + 1) % self.gather_metric_period == 0:
            check_losses(loss_dict, iteration, self.gather_metric_period)
        super()._write_metrics(loss_dict, data_time, prefix, iter)


class EvalAfterFinishedTraining(hooks.EvalHook):
    """
    Detectron2's EvalHook, evaluating after training only when the last iteration finished.
    (Its own test, `iter + 1 >= max_iter`, also holds for a run that failed in its last
    iteration; TrainerBase.train sets `iter` to max_iter only when the loop ended.)
    """

    @classmethod
    def replacing(cls, hook_list: List) -> List:
        """`hook_list` with each EvalHook replaced by this class, with the same period and function."""
        return [
            cls(h._period, h._func, h._eval_after_train) if type(h) is hooks.EvalHook else h for h in hook_list
        ]  # fmt: skip

    def after_train(self):
        if self.trainer.iter < self.trainer.max_iter:
            self._eval_after_train = False
        super().after_train()


class LastGoodCheckpoint(HookBase):
    """
    Follows `last_checkpoint` through the run (main process: the checkpointer that writes). When
    the run stops on NonFiniteLossError, it untags the checkpoints this run wrote whose weights gave
    no finite loss (they stay on disk: nothing of the user's is deleted), tags the last good one again and completes the error's message with it and
    with `hint` (what to change), the same on every rank. Register it on every rank, after the
    PeriodicCheckpointer.
    """

    def __init__(self, checkpointer, hint: str = ""):
        self.checkpointer, self.hint = checkpointer, hint
        self._tags: List[Tuple[float, Optional[str]]] = []  # (iteration, tagged file) as the run went on
        _log_user_errors_in_one_line()

    def _tagged(self) -> Optional[str]:
        if not comm.is_main_process() or not self.checkpointer.has_checkpoint():
            return None
        return self.checkpointer.get_checkpoint_file()

    def before_train(self):
        # A resumed run starts from the checkpoint of the iteration before its first.
        start = self.trainer.start_iter
        self._tags = [(start - 1 if start > 0 else -math.inf, self._tagged())]

    def after_step(self):
        tagged = self._tagged()
        if tagged != self._tags[-1][1]:
            self._tags.append((self.trainer.iter, tagged))

    def after_train(self):
        error = sys.exc_info()[1]  # after_train runs in TrainerBase.train's `finally`
        if not isinstance(error, NonFiniteLossError):
            return
        note = self._withdraw(error.first_suspect) if comm.is_main_process() else ""
        if comm.get_world_size() > 1:
            note = comm.all_gather(note)[0]
        error.checkpoint_note, error.hint = note, self.hint

    def _withdraw(self, first_suspect: int) -> str:
        """Untag this run's checkpoints of iterations >= first_suspect, re-tag the one before; say which is left."""
        untagged = []
        while len(self._tags) > 1 and self._tags[-1][0] >= first_suspect:
            _, path = self._tags.pop()
            if path and os.path.isfile(path):
                untagged.append(os.path.basename(path))
        iteration, good = self._tags[-1]
        tag = os.path.join(self.checkpointer.save_dir, "last_checkpoint")
        if good:
            self.checkpointer.tag_last_checkpoint(os.path.basename(good))
        elif os.path.exists(tag):
            os.remove(tag)
        if not good:
            left = "no good checkpoint was written"
        elif iteration >= first_suspect:  # the checkpoint the run resumed from: not this run's to remove
            left = f"the checkpoint it resumed from, {good}, named by last_checkpoint, already gives this loss"
        else:
            left = f"the last good checkpoint is {good}, named by last_checkpoint"
        if untagged:
            left += f"; {', '.join(reversed(untagged))}, whose weights gave this loss, kept untagged"
        return left


class _OneLineUserErrors(logging.Filter):
    """A logged exception that is a UserError keeps its one-line message and loses its traceback."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, UserError):
            record.msg, record.args, record.exc_info, record.exc_text = f"{record.getMessage()} {error}", (), None, None
        return True


def _log_user_errors_in_one_line() -> None:
    # TrainerBase.train logs "Exception during training:" with the traceback before re-raising.
    train_loop = logging.getLogger("detectron2.engine.train_loop")
    if not any(isinstance(f, _OneLineUserErrors) for f in train_loop.filters):
        train_loop.addFilter(_OneLineUserErrors())
