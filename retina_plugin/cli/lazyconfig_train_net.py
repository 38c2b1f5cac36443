"""
tools/lazyconfig_train_net.py: train or evaluate with Detectron2's LazyConfig (Python) configs,
as Detectron2's tools/lazyconfig_train_net.py does (`retina_plugin.engine.lazy_config`,
`lazy_trainer`), with the dataset flags of tools/train_net.py.

    python tools/lazyconfig_train_net.py --config-file configs/shapes_R18_cpu.py [--num-gpus N]
        [--eval-only] [--resume] [--train-json ... --train-images ... --test-json ... --test-images ...]
        [KEY=VALUE ...]

The config is loaded and checked once here, before `launch` starts any process; a bad config
file or override ends with one line `lazyconfig_train_net: error: ...` and status 2. Under srun
or torchrun the launch flags come from the environment, and a lost rank ends the job within
--heartbeat-timeout, as for tools/train_net.py (docs/distributed.md).
"""
import argparse
import sys

from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing.spawn import ProcessRaisedException

from ..data.catalog import check_dataset_files, register_config_datasets
from ..engine.lazy_config import (
    check_inference_settings,
    check_model,
    dataset_names,
    load_lazy_config,
    one_line,
    predicts_rotated_boxes,
)
from ..engine.lazy_trainer import do_train, evaluate_checkpoint
from ..errors import UserError
from .arguments import add_dataset_arguments, user_dataset_opts, worker_user_error
from .cluster import add_launch_arguments, given_flags, launch_plan
from .launch import launch

PROG = "lazyconfig_train_net"


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's default_argument_parser (opts as KEY=VALUE overrides), --train-json & co, --dist-timeout, --heartbeat-timeout."""
    parser = default_argument_parser(
        epilog="Overrides are KEY=VALUE in Detectron2's LazyConfig syntax, e.g. train.max_iter=100 "
        "dataloader.train.total_batch_size=4 model.head.num_convs=2 "
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128]"
    )
    parser.prog = PROG
    return add_launch_arguments(add_dataset_arguments(parser))


def load(args):
    """The checked config of `args`: its file, the dataset flags (registered), the KEY=VALUE overrides."""
    return load_lazy_config(args.config_file, list(args.opts), eval_only=args.eval_only, dataset_opts=user_dataset_opts(args))


def setup(args):
    """The checked config of `args`, its datasets registered, Detectron2's default_setup done."""
    cfg = load(args)
    register_config_datasets(dataset_names(cfg))
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="retina_plugin", abbrev_name="retina")
    return cfg


def main(args):
    """One process's work (under `launch`): evaluate with --eval-only, else train."""
    try:
        cfg = setup(args)
        if args.eval_only:
            return evaluate_checkpoint(cfg, args.resume)
        return do_train(args, cfg)
    except UserError as e:
        if comm.get_world_size() > 1:
            raise  # the launching process prints it (`run`)
        fail(e)


def fail(error) -> None:
    """End the program with `lazyconfig_train_net: error: ...` on stderr and status 2."""
    sys.stderr.write(f"{PROG}: error: {one_line(error)}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def check_args(args) -> None:
    """
    Load and check the config of `args` once, before `launch` starts any process, building its
    model on the CPU so that a value the model rejects fails here too, and checking the files of
    the datasets it uses as tools/train_net.py does (fails as `fail`).
    """
    try:
        cfg = load(args)
        model = check_model(cfg, args.config_file)
        check_inference_settings(cfg, args.config_file)
        names = dataset_names(cfg)
        register_config_datasets(names)
        used = ([] if args.eval_only else names.DATASETS.TRAIN) + names.DATASETS.TEST
        check_dataset_files(used, rotated=predicts_rotated_boxes(model))
    except UserError as e:
        fail(e)


def run(argv=None):
    """tools/lazyconfig_train_net.py: parse, with the launcher's environment (`cluster`), check once, launch."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = argument_parser().parse_args(argv)
    try:
        plan = launch_plan(args, given_flags(argument_parser, argv))
    except UserError as e:
        fail(e)
    check_args(args)
    args.num_gpus, args.num_machines = plan.processes_per_machine, plan.num_machines
    args.machine_rank, args.dist_url = plan.machine_rank, plan.dist_url
    print("Command Line Args:", args)
    try:
        return launch(main, plan, args, PROG)
    except ProcessRaisedException as e:  # a worker process stopped on a UserError: its last line
        error = worker_user_error(e)
        if error is None:
            raise
        fail(error)
