"""
Run by tests/engine/test_train_net.py: trains with retina_plugin.engine under Detectron2's `launch`
(GLOO on the CPU) and has every rank save its final weights, so the test can compare ranks.

    python tests/engine/train_worker.py --num-gpus 2 --config-file ... OUTPUT_DIR ...
"""
import os

import torch
from detectron2.engine import launch
from detectron2.utils import comm

import retina_plugin  # noqa: F401
from retina_plugin.cli.train_net import argument_parser, setup
from retina_plugin.engine import Trainer


def train_and_save_rank(args):
    cfg = setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    # Parameters only: BN running statistics are per rank (broadcast_buffers=False).
    params = {k: v.detach().cpu() for k, v in model.named_parameters()}
    torch.save(params, os.path.join(cfg.OUTPUT_DIR, f"rank{comm.get_rank()}_weights.pth"))


if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(train_and_save_rank, args.num_gpus, dist_url=args.dist_url, args=(args,))
