"""
Run by tests/engine/test_resume.py: trains with retina_plugin.engine like tools/train_net.py and
appends each iteration's raw losses to OUTPUT_DIR/losses.jsonl, so the test can compare an
interrupted-and-resumed run with an uninterrupted one. Two environment variables make it stop
where the test wants to kill it (the kill itself is the test's SIGKILL):

    RETINA_TEST_PAUSE_AFTER_ITER=k     after iteration k is logged, wait to be killed
    RETINA_TEST_PAUSE_IN_SAVE=n        the n-th checkpoint write stops half-way and waits

    python tests/engine/resume_worker.py [--resume] --config-file ... KEY VALUE ...
"""
import io
import json
import os
import time

import torch
from detectron2.engine import HookBase

import retina_plugin.weights.checkpoint
from retina_plugin.cli.train_net import argument_parser, setup
from retina_plugin.engine import Trainer


def _wait_to_be_killed(marker):
    with open(marker, "w") as f:
        f.write("waiting")
    time.sleep(600)


class RecordLosses(HookBase):
    def __init__(self, path, pause_after):
        self.path, self.pause_after = path, pause_after

    def after_step(self):
        storage = self.trainer.storage
        record = {"iteration": self.trainer.iter}
        record.update({k: storage.history(k).latest() for k in ("loss_cls", "loss_box_reg")})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.trainer.iter == self.pause_after:
            _wait_to_be_killed(self.path + ".paused")


def _pause_in_nth_save(n, marker):
    real_save, calls = torch.save, [0]

    def half_written_save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] != n:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        f.flush()
        _wait_to_be_killed(marker)

    retina_plugin.weights.checkpoint.torch.save = half_written_save


def main(args):
    torch.set_num_threads(1)
    cfg = setup(args)
    if os.environ.get("RETINA_TEST_PAUSE_IN_SAVE"):
        _pause_in_nth_save(int(os.environ["RETINA_TEST_PAUSE_IN_SAVE"]), os.path.join(cfg.OUTPUT_DIR, "save.paused"))
    trainer = Trainer(cfg)
    trainer.register_hooks([RecordLosses(os.path.join(cfg.OUTPUT_DIR, "losses.jsonl"),
                                         int(os.environ.get("RETINA_TEST_PAUSE_AFTER_ITER", -1)))])
    trainer.resume_or_load(resume=args.resume)
    trainer.train()


if __name__ == "__main__":
    main(argument_parser().parse_args())
