"""
tools/train_net.py: train and evaluate with Detectron2's DefaultTrainer (`retina_plugin.engine.trainer`)
and COCOEvaluator, on Detectron2's command line (`default_argument_parser`: --num-gpus,
--eval-only, --resume, the multi-machine flags, trailing KEY VALUE opts) plus the dataset flags.

    python tools/train_net.py --config-file configs/retinanet_R101.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/retinanet_R50.yaml --eval-only MODEL.WEIGHTS model.pth
    python tools/train_net.py --config-file configs/retinanet_R50.yaml \
        --train-json ann/train.json --train-images img/train --test-json ann/val.json --test-images img/val
    python tools/train_net.py --config-file configs/rotated_shapes_R18.yaml --train-dota DOTA/train --test-dota DOTA/val
    srun python tools/train_net.py --resume --config-file configs/retinanet_R50.yaml --num-gpus 8

Under srun or torchrun the launch flags come from the environment (`retina_plugin.cli.cluster`);
with several processes, a lost rank ends the job within --heartbeat-timeout (`retina_plugin.cli.launch`,
docs/distributed.md).
"""
import sys

from detectron2.engine import default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing.spawn import ProcessRaisedException

from ..config import ConfigError, load_config
from ..data.catalog import check_class_names, check_dataset_files, register_config_datasets
from ..engine.trainer import Trainer, last_checkpoint
from ..inference.model import load_model
from ..inference.tiling_checks import check_tiled_evaluation
from ..modeling.box_transform import is_rotated
from . import arguments
from .arguments import check_device, one_line_errors, user_dataset_opts, worker_user_error
from .cluster import LaunchPlan, add_launch_arguments, given_flags, launch_plan
from .launch import launch

PROG = "train_net"


def argument_parser(epilog=None):
    """Detectron2's default_argument_parser, the dataset flags, --dist-timeout and --heartbeat-timeout."""
    return add_launch_arguments(arguments.argument_parser(epilog))


def checked_config(args):
    """
    The config of --config-file, the dataset flags and the trailing KEY VALUE opts, checked
    before anything is built or launched: an unknown key, a wrong type or an out-of-range value,
    a CUDA device the machine lacks, or a dataset whose files are not there (or, for a rotated
    model, whose json has 4-number boxes) raises a UserError saying what to do.
    """
    # The dataset flags register their files before the config is whole: it is read once
    # without them for the keys registration needs.
    first = load_config(args.config_file, list(args.opts))
    dataset_opts = user_dataset_opts(args, skip_bad_images=first.DATALOADER.SKIP_UNREADABLE_IMAGES)
    cfg = load_config(args.config_file, dataset_opts + list(args.opts))
    if len(cfg.DATASETS.TEST):
        check_tiled_evaluation(cfg)  # before training, not when evaluating after it
    if cfg.MODEL.RETINA_PLUGIN.INFERENCE_DTYPE == "int8" and not args.eval_only:
        raise ConfigError(
            "MODEL.RETINA_PLUGIN.INFERENCE_DTYPE int8 is for --eval-only: its calibration belongs to one set of "
            "weights; train in float32, then calibrate the trained weights with tools/calibrate_int8.py"
        )
    check_device(cfg.MODEL.DEVICE, args.num_gpus)
    register_config_datasets(cfg)
    check_dataset_files(([] if args.eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST), rotated=is_rotated(cfg))
    check_class_names([] if args.eval_only else list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.TEST), cfg.MODEL.RETINANET.NUM_CLASSES)
    return cfg


def launch_main(args, plan: LaunchPlan, prog: str = PROG):
    """
    `main` in this machine's processes of `plan` (Detectron2's launch, `retina_plugin.cli.launch`),
    after the config was checked in this one; bad input (config, device, dataset files, an
    unreadable image) exits with one line.
    """
    with one_line_errors(prog):
        if plan.world_size > 1 and plan.local_rank is None:
            checked_config(args)  # here, before any process starts; in one process main checks it
        try:
            return launch(main, plan, args, prog)
        except ProcessRaisedException as e:  # a worker process stopped on bad input: its last line
            error = worker_user_error(e)
            if error is None:
                raise
            raise error from None


def setup(args):
    """The checked config (see `checked_config`), frozen, with Detectron2's default_setup and logging."""
    cfg = checked_config(args)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup logs "detectron2" and "fvcore"; the plugin's own messages (dropped boxes,
    # skipped images, checkpoint and int8 notes) go to the same console and log.txt.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="retina_plugin", abbrev_name="retina")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        # --resume: the last checkpoint of OUTPUT_DIR, else MODEL.WEIGHTS (Detectron2's resume_or_load).
        weights = last_checkpoint(cfg.OUTPUT_DIR) if args.resume else None
        results = Trainer.test(cfg, load_model(cfg, weights))
        if cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None):
    """tools/train_net.py: parse the command line, with the launcher's environment (`cluster`), print it, launch."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = argument_parser().parse_args(argv)
    with one_line_errors(PROG):
        plan = launch_plan(args, given_flags(argument_parser, argv))
    args.num_gpus, args.num_machines = plan.processes_per_machine, plan.num_machines
    args.machine_rank, args.dist_url = plan.machine_rank, plan.dist_url
    print("Command Line Args:", args)
    return launch_main(args, plan)
