"""
Training that goes non-finite stops in one line, unevaluated, its last good checkpoint tagged:
real runs of tools/train_net.py and tools/lazyconfig_train_net.py with a learning rate of 1000,
which on the tiny shapes gives finite losses at iterations 0 and 1 and NaN at iteration 2.
"""
import math

import torch
from detectron2.engine import SimpleTrainer, hooks

from retina_plugin.engine.non_finite import EvalAfterFinishedTraining, FiniteLosses, LastGoodCheckpoint, NonFiniteLossError
from retina_plugin.weights.checkpoint import RetinaCheckpointer
from test_lazy import QUICK, SHAPES, _dataset_args, _tool
from tool_runs import CONFIG, QUICK_OPTS, dataset_args, run_tool

# Three iterations, a checkpoint after each: iteration 2 is the last, so Detectron2's EvalHook
# would evaluate after it even though it failed.
DIVERGING = [*QUICK_OPTS, "SOLVER.BASE_LR", "1000.0", "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.MAX_ITER", "3"]
LAZY_DIVERGING = [*QUICK, "optimizer.lr=1000.0", "lr_multiplier.warmup_length=0.0", "train.checkpointer.period=1", "train.max_iter=3"]


def _error_line(proc, prog):
    """The run ended with status 2, one `prog: error:` line on stderr and no traceback anywhere."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _assert_stopped_at_iteration_2_with_checkpoint_0(proc, line, out):
    # The iteration and the loss, then what is left.
    assert "loss_cls is nan" in line and "at iteration 2: training stopped, not evaluated" in line, line
    assert f"the last good checkpoint is {out / 'model_0000000.pth'}, named by last_checkpoint" in line, line
    assert "model_0000001.pth, whose weights gave this loss, kept untagged" in line, line
    # No evaluation of the broken model, no final checkpoint of it.
    log = proc.stdout + proc.stderr
    assert "Evaluation results" not in log and "copypaste" not in log and "Start inference" not in log
    assert not (out / "inference").exists()
    assert not (out / "model_final.pth").exists()
    assert (out / "model_0000001.pth").is_file()  # kept (nothing of the user's is deleted), untagged
    # The checkpoint of iteration 0 (its weights gave the finite loss of iteration 1) stays, whole and tagged.
    assert (out / "last_checkpoint").read_text() == "model_0000000.pth"
    checkpoint = torch.load(out / "model_0000000.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_train_net_stops_in_one_line_with_the_last_good_checkpoint(tiny_shapes, tmp_path):
    out = tmp_path / "diverge"
    proc = run_tool("tools/train_net.py", "--config-file", str(CONFIG), *dataset_args(tiny_shapes), *DIVERGING,
                    "OUTPUT_DIR", str(out), check=False)  # fmt: skip
    line = _error_line(proc, "train_net")
    _assert_stopped_at_iteration_2_with_checkpoint_0(proc, line, out)
    assert line.endswith("lower SOLVER.BASE_LR or clip gradients (SOLVER.CLIP_GRADIENTS.ENABLED True)"), line
    # log.txt has the stop in one line too, not Detectron2's FloatingPointError traceback.
    log = (out / "log.txt").read_text()
    assert "FloatingPointError" not in log and "Exception during training: loss_cls is nan" in log


def test_lazyconfig_train_net_stops_in_one_line_with_the_last_good_checkpoint(tiny_shapes, tmp_path):
    out = tmp_path / "diverge"
    proc = _tool("--config-file", f"{SHAPES}.py", *_dataset_args(tiny_shapes), *LAZY_DIVERGING,
                 f"train.output_dir={out}", check=False)  # fmt: skip
    line = _error_line(proc, "lazyconfig_train_net")
    _assert_stopped_at_iteration_2_with_checkpoint_0(proc, line, out)
    assert line.endswith("; lower optimizer.lr"), line


def test_every_rank_stops_with_the_same_line(tiny_shapes, tmp_path):
    out = tmp_path / "ddp"
    proc = run_tool("tools/train_net.py", "--num-gpus", "2", "--config-file", str(CONFIG), *dataset_args(tiny_shapes),
                    *DIVERGING, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out), check=False)  # fmt: skip
    line = _error_line(proc, "train_net")
    assert " at iteration 2 on rank " in line and "last good checkpoint is" in line, line
    # Both ranks stopped on the check (one batch each: either rank's loss may be the NaN one).
    stop = line.removeprefix("train_net: error: ").split(":")[0]
    for log in ("log.txt", "log.txt.rank1"):
        assert f"Exception during training: {stop}" in (out / log).read_text(), log
    assert (out / "last_checkpoint").read_text() == "model_0000000.pth"
    assert not (out / "model_final.pth").exists() and not (out / "inference").exists()


def test_the_message_names_each_non_finite_loss_and_the_finite_ones():
    from retina_plugin.engine.non_finite import check_losses
    from retina_plugin.errors import UserError

    losses = {"loss_cls": torch.tensor(float("inf")), "loss_box_reg": torch.tensor(0.25)}
    try:
        check_losses(losses, iteration=7, gather_period=1)
    except NonFiniteLossError as e:
        assert isinstance(e, UserError) and e.first_suspect == 6
        assert str(e) == "loss_cls is inf (loss_box_reg 0.25) at iteration 7: training stopped, not evaluated"
    else:
        raise AssertionError("no NonFiniteLossError")
    check_losses({"loss_cls": torch.tensor(math.pi)}, iteration=0, gather_period=1)  # finite: no error


class _Trainer(FiniteLosses, SimpleTrainer):
    """Detectron2's SimpleTrainer with the check, as both tools' trainers have it."""


class _Scaled(torch.nn.Module):
    """loss = w * x for the batch x: the loader decides at which iteration it is not finite."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return {"loss_x": self.w * x}


def _train(out, batches, start_iter=0):
    """A real Detectron2 training loop over `batches` with a checkpoint every iteration; its NonFiniteLossError, if any."""
    model = _Scaled()
    trainer = _Trainer(model, iter(batches), torch.optim.SGD(model.parameters(), lr=0.0))
    checkpointer = RetinaCheckpointer(model, str(out), trainer=trainer)
    if start_iter:
        checkpointer.resume_or_load("", resume=True)
    trainer.register_hooks([hooks.PeriodicCheckpointer(checkpointer, 1), EvalAfterFinishedTraining(0, lambda: {}), LastGoodCheckpoint(checkpointer)])
    try:
        trainer.train(start_iter, len(batches) + start_iter)
    except NonFiniteLossError as e:
        return e
    return None


def test_a_run_resumed_from_a_checkpoint_that_gives_the_loss_keeps_it(tmp_path):
    assert _train(tmp_path, [torch.tensor(1.0)] * 3) is None
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    # Resumed after iteration 2: its first iteration, 3, is not finite; the checkpoint it resumed from stays tagged.
    error = _train(tmp_path, [torch.tensor(float("nan"))], start_iter=3)
    assert str(error).startswith("loss_x is nan at iteration 3: training stopped, not evaluated; the checkpoint it "
                                 f"resumed from, {tmp_path / 'model_final.pth'}, named by last_checkpoint, already gives this loss")  # fmt: skip
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth" and (tmp_path / "model_final.pth").is_file()


def test_no_good_checkpoint_leaves_no_last_checkpoint(tmp_path):
    # Iteration 0 finite, 1 not: the checkpoint of iteration 0 holds the weights that gave it.
    error = _train(tmp_path, [torch.tensor(1.0), torch.tensor(float("inf"))])
    assert str(error).endswith("at iteration 1: training stopped, not evaluated; no good checkpoint was written; "
                               "model_0000000.pth, whose weights gave this loss, kept untagged")  # fmt: skip
    assert not (tmp_path / "last_checkpoint").exists()
    assert [p.name for p in tmp_path.glob("*.pth")] == ["model_0000000.pth"]
