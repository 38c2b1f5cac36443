"""
The LazyConfig (Python) configs and tools/lazyconfig_train_net.py: they build the models, solver
and data of the YAML configs, and the tool trains, checkpoints, resumes and evaluates in real
subprocesses, failing on a bad config in one line.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.utils.events import EventStorage

import retina_plugin  # noqa: F401  (registers the components)
from retina_plugin import load_config
from retina_plugin.cli import lazyconfig_train_net as lazy_tool
from retina_plugin.engine.lazy_config import check_model, load_lazy_config, predicts_rotated_boxes

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "lazyconfig_train_net.py"
SHAPES = "configs/shapes_R18_cpu"

# Small and quick, as tests/test_train_net.py's QUICK_OPTS: batch 2 at 128 px, one conv per
# subnet, no loader workers; score threshold 0 so that a barely trained model still detects
# (COCOeval then computes real APs, not NaN for "no predictions").
QUICK = [
    "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[128]", "dataloader.train.mapper.augmentations.0.max_size=128",
    "dataloader.test.mapper.augmentations.0.short_edge_length=128", "dataloader.test.mapper.augmentations.0.max_size=128",
    "model.head.num_convs=1", "model.postprocess.score_thresh=0.0", "train.checkpointer.period=2", "train.seed=7",
]


def _dataset_args(root):
    return [
        "--train-json", str(root / "annotations" / "instances_train.json"), "--train-images", str(root / "train"),
        "--test-json", str(root / "annotations" / "instances_val.json"), "--test-images", str(root / "val"),
    ]


def _tool(*args, check=True, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"lazyconfig_train_net failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _final_ap(out_dir):
    lines = [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines() if line.strip()]
    evals = [m for m in lines if "bbox/AP" in m]
    assert evals, "no bbox/AP in metrics.json"
    return evals[-1]


def _copypaste_aps(log: str):
    """The numbers of print_csv_format's 'copypaste: AP,AP50,...' line that follows the header."""
    lines = [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]
    header = lines.index("AP,AP50,AP75,APs,APm,APl")
    return [float(x) for x in lines[header + 1].split(",")]


# 48 s: with the slow tests. The default run trains LazyConfigs in test_two_cpu_processes,
# tests/engine/test_lazy_zoo.py and test_metrics_resume.py (resumed from a checkpoint).
@pytest.mark.slow
def test_shapes_lazyconfig_trains_checkpoints_evaluates_and_resumes(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", f"{SHAPES}.py", *_dataset_args(tiny_shapes)]
    proc = _tool(*common, *QUICK, "train.max_iter=3", f"train.output_dir={out}")
    log = proc.stdout + proc.stderr

    assert (out / "model_0000001.pth").is_file() and (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    checkpoint = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 2
    assert "head.cls_score.weight" in checkpoint["model"]
    assert 0 < checkpoint["trainer"]["loss_normalizer"] < 100.0  # moved from its init by the foreground counts
    # The config's COCOEvaluator ran on the test split: Detectron2's table and csv lines, metrics.json.
    assert "Evaluation results for bbox" in log
    metrics = _final_ap(out)
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), metrics
    aps = _copypaste_aps(log)
    assert aps[0] == pytest.approx(metrics["bbox/AP"], abs=1e-4)
    assert json.loads((out / "inference" / "coco_instances_results.json").read_text())  # its detections

    # --eval-only with the trained weights gives the same AP.
    proc = _tool("--eval-only", *common, *QUICK, f"train.init_checkpoint={out / 'model_final.pth'}",
                 f"train.output_dir={tmp_path / 'eval'}")
    assert _copypaste_aps(proc.stdout + proc.stderr)[0] == pytest.approx(metrics["bbox/AP"], abs=1e-4)

    # --resume continues from the saved iteration with the saved loss normaliser.
    proc = _tool("--resume", *common, *QUICK, "train.max_iter=5", f"train.output_dir={out}")
    assert "Starting training from iteration 3" in proc.stdout + proc.stderr
    resumed = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert resumed["iteration"] == 4
    assert resumed["trainer"]["loss_normalizer"] != checkpoint["trainer"]["loss_normalizer"]


def test_two_cpu_processes(tiny_shapes, tmp_path):
    # launch + GLOO on the CPU: DDP wraps the model without device ids (engine._ddp_without_device_ids).
    out = tmp_path / "ddp"
    proc = _tool("--num-gpus", "2", "--config-file", f"{SHAPES}.py", *_dataset_args(tiny_shapes), *QUICK,
                 "train.max_iter=2", f"train.output_dir={out}")
    assert "World size: 2" in proc.stdout + proc.stderr
    assert (out / "log.txt.rank1").is_file()
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["iteration"] == 1
    assert math.isfinite(_final_ap(out)["bbox/AP"])


def test_bad_override_fails_in_one_line():
    proc = _tool("--config-file", f"{SHAPES}.py", "train.max_itr=3", check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lazyconfig_train_net: error: override 'train.max_itr=3': train has no key 'max_itr' (it has output_dir, "
        "init_checkpoint, max_iter, amp, ddp, checkpointer, eval_period, log_period, device, seed, cudnn_benchmark)"
    ], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_coco_not_prepared_fails_before_launch_naming_the_file(capsys):
    """The datasets' files are checked as train_net checks them: COCO's json under $DETECTRON2_DATASETS is not here."""
    err = _check_fails(capsys, "--config-file", "configs/retinanet_R50.py", "--eval-only")
    assert "dataset 'coco_2017_val': " in err and "instances_val2017.json not found" in err and "$DETECTRON2_DATASETS" in err


def test_shapes_lazyconfig_passes_the_dataset_check(tiny_shapes):
    args = lazy_tool.argument_parser().parse_args(["--config-file", f"{SHAPES}.py", *_dataset_args(tiny_shapes)])
    lazy_tool.check_args(args)  # registered, files present, a horizontal model: no exit
    assert predicts_rotated_boxes(check_model(lazy_tool.load(args))) is False


ROTATED_LAZYCONFIG = """
from detectron2.config import LazyCall as L, LazyConfig
from detectron2.modeling.anchor_generator import RotatedAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransformRotated

_base = LazyConfig.load({shapes!r})
model, dataloader, optimizer, lr_multiplier, train, inference = (_base[k] for k in
    ("model", "dataloader", "optimizer", "lr_multiplier", "train", "inference"))
_anchors = model.anchor_generator
model.anchor_generator = L(RotatedAnchorGenerator)(sizes=_anchors.sizes, aspect_ratios=_anchors.aspect_ratios,
                                                   angles=[[0.0]], strides=_anchors.strides, offset=_anchors.offset)
model.head.box2box_transform = L(Box2BoxTransformRotated)(weights=(1.0, 1.0, 1.0, 1.0, 1.0))
model.postprocess.box2box_transform = L(Box2BoxTransformRotated)(weights=(1.0, 1.0, 1.0, 1.0, 1.0))
"""


def test_rotated_lazyconfig_refuses_4_number_boxes_before_launch(tiny_shapes, tmp_path, capsys):
    """The shapes LazyConfig with Detectron2's RotatedAnchorGenerator: the model check_model built predicts rotated boxes, and the shapes' 4-number boxes are refused in one line."""
    config = tmp_path / "rotated_shapes.py"
    config.write_text(ROTATED_LAZYCONFIG.format(shapes=str(REPO / f"{SHAPES}.py")))
    assert predicts_rotated_boxes(check_model(load_lazy_config(str(config)))) is True
    err = _check_fails(capsys, "--config-file", str(config), *_dataset_args(tiny_shapes))
    train_json = tiny_shapes / "annotations" / "instances_train.json"
    assert f"Invalid COCO json {train_json}: annotations[0] (id " in err
    assert "4 numbers [x, y, width, height], but the model is rotated" in err


def _check_fails(capsys, *argv):
    """What the tool does before `launch`, in this process: the error line it ends with (status 2)."""
    args = lazy_tool.argument_parser().parse_args(list(argv))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        lazy_tool.check_args(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("lazyconfig_train_net: error: "), err
    return err


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.max_iter=abc", "override 'train.max_iter=abc': the value must be a number (it is 500)"),
        ("train.amp.enabled=1", "the value must be true or false"),
        ("train.max_iter", "override 'train.max_iter' is not KEY=VALUE"),
        ("~train.max_iter", "deleting a key is not supported"),
        ("model.backbone.bottom_up.freeze_at=0", "model.backbone.bottom_up has no key 'freeze_at' (it has module)"),
        ("dataloader.train.mapper.augmentations.2.max_size=1", "augmentations is a list of 2; '2' is not an index"),
        # A value the model rejects fails before training, naming the part.
        ("model.head.norm=XYZ", "cannot build model.head (FocalLossHead): KeyError"),
        ("model.backbone.bottom_up.module.stages.depth=19", "cannot build model.backbone.bottom_up.module.stages"),
    ],
)
def test_bad_overrides(capsys, override, words):
    assert words in _check_fails(capsys, "--config-file", f"{REPO}/{SHAPES}.py", override)


def test_good_overrides_pass(capsys):
    # A key of the config, a keyword its LazyCall's target accepts but the config leaves out, a list index.
    args = lazy_tool.argument_parser().parse_args([
        "--config-file", f"{REPO}/{SHAPES}.py", "train.max_iter=7", "model.postprocess.box2box_transform.scale_clamp=4.0",
        "model.backbone.bottom_up.module.stages.stride_in_1x1=false", "+train.note=x",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
    ])
    cfg = load_lazy_config(args.config_file, args.opts)
    assert cfg.train.max_iter == 7 and cfg.train.note == "x"
    assert cfg.model.postprocess.box2box_transform.scale_clamp == 4.0
    assert list(cfg.dataloader.train.mapper.augmentations[0].short_edge_length) == [128]


def test_bad_config_file_fails_in_one_line(capsys, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("model = dict(\n")
    no_model = tmp_path / "no_model.py"
    no_model.write_text("train = dict(max_iter=1)\n")
    for config, words in [
        (broken, "SyntaxError"),
        (tmp_path / "missing.py", "config file not found"),
        (no_model, "has no model, dataloader, optimizer, lr_multiplier; training needs"),
        (REPO / f"{SHAPES}.yaml", "is a YAML config of tools/train_net.py"),
    ]:
        err = _check_fails(capsys, "--config-file", str(config))
        assert str(config) in err and words in err, err


# ---------------------------------------------------------------- same model, solver and data as the YAMLs


def _build_pair(name, opts=()):
    lazy = LazyConfig.load(f"{REPO}/configs/{name}.py")
    yaml_cfg = load_config(f"{REPO}/configs/{name}.yaml", ["MODEL.DEVICE", "cpu", *opts])
    return lazy, yaml_cfg, instantiate(lazy.model), build_model(yaml_cfg)


def _assert_same_architecture(lazy_model, yaml_model):
    a, b = lazy_model.state_dict(), yaml_model.state_dict()
    assert list(a) == list(b)
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}
    assert str(lazy_model) == str(yaml_model)  # same module classes (folded FrozenBN, norms) and options
    # Inference settings not in str(): Winograd mode ("auto" measures per shape), dtype, compile.
    for attr in ("inference_dtype", "compile_inference", "memory_format"):
        assert getattr(lazy_model, attr) == getattr(yaml_model, attr), attr
    assert {m.winograd for m in lazy_model.modules() if hasattr(m, "winograd")} == {m.winograd for m in yaml_model.modules() if hasattr(m, "winograd")}
    frozen = lambda m: sorted(n for n, p in m.named_parameters() if not p.requires_grad)  # noqa: E731
    assert frozen(lazy_model) == frozen(yaml_model)
    for x, y in zip(lazy_model.anchor_generator.cell_anchors, yaml_model.anchor_generator.cell_anchors):
        assert torch.allclose(x, y, rtol=0, atol=1e-6)
    assert lazy_model.anchor_generator.strides == yaml_model.anchor_generator.strides
    for attr in ("num_classes", "head_in_features", "input_format", "loss_normalizer_momentum", "loss_normalizer",
                 "inference_dtype", "memory_format"):
        assert getattr(lazy_model, attr) == getattr(yaml_model, attr), attr
    assert torch.equal(lazy_model.pixel_mean, yaml_model.pixel_mean) and torch.equal(lazy_model.pixel_std, yaml_model.pixel_std)
    head_a, head_b = lazy_model.head, yaml_model.head
    for attr in ("focal_loss_alpha", "focal_loss_gamma", "box_reg_loss_type", "smooth_l1_beta"):
        assert getattr(head_a, attr) == getattr(head_b, attr), attr
    assert head_a.box2box_transform.weights == head_b.box2box_transform.weights
    assert vars(lazy_model.postprocess).keys() == vars(yaml_model.postprocess).keys()
    for attr, value in vars(lazy_model.postprocess).items():
        if attr != "box2box_transform":
            assert value == getattr(yaml_model.postprocess, attr), attr
    m_a, m_b = lazy_model.anchor_matcher, yaml_model.anchor_matcher
    assert (m_a.thresholds, m_a.labels, m_a.allow_low_quality_matches) == (m_b.thresholds, m_b.labels, m_b.allow_low_quality_matches)


def _augmentation(aug):
    """
    An augmentation's class and options, sequences as tuples (a LazyConfig turns tuples into
    lists); for ResizeShortestEdge the set of edge lengths it draws from, "range" or "choice".
    """
    options = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in vars(aug).items()}
    if isinstance(aug, ResizeShortestEdge):
        lengths = options.pop("short_edge_length")
        options["lengths"] = tuple(range(lengths[0], lengths[1] + 1)) if options.pop("is_range") else tuple(sorted(set(lengths)))
        del options["sample_style"]
    return type(aug).__name__, options


def _optimizer_groups(optimizer):
    return sorted((g["lr"], g["weight_decay"], g["momentum"], g["nesterov"], len(g["params"])) for g in optimizer.param_groups)


def _assert_same_solver_and_data(lazy, yaml_cfg, lazy_model, yaml_model):
    # Optimizer: SGD at BASE_LR, momentum, weight decay (0 on norms) on the same parameter groups.
    lazy.optimizer.params.model = lazy_model
    assert _optimizer_groups(instantiate(lazy.optimizer)) == _optimizer_groups(build_optimizer(yaml_cfg, yaml_model))
    # LR schedule: the same multiplier at every iteration that matters (warmup, steps, end).
    s = yaml_cfg.SOLVER
    assert lazy.train.max_iter == s.MAX_ITER
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    yaml_sched = build_lr_scheduler(yaml_cfg, dummy)._multiplier
    lazy_sched = instantiate(lazy.lr_multiplier)
    points = {0, 1, s.WARMUP_ITERS // 2, s.WARMUP_ITERS - 1, s.WARMUP_ITERS, s.MAX_ITER - 1}
    points |= {x + d for x in s.STEPS for d in (-1, 0, 1)}
    for it in sorted(points):
        assert lazy_sched(it / s.MAX_ITER) == pytest.approx(yaml_sched(it / s.MAX_ITER), rel=1e-9), it
    # Training options.
    assert lazy.train.checkpointer.period == s.CHECKPOINT_PERIOD
    assert lazy.train.eval_period == yaml_cfg.TEST.EVAL_PERIOD
    assert lazy.train.init_checkpoint == yaml_cfg.MODEL.WEIGHTS
    assert lazy.train.output_dir == yaml_cfg.OUTPUT_DIR
    assert lazy.train.amp.enabled == s.AMP.ENABLED
    assert lazy.train.seed == yaml_cfg.SEED
    # Data: datasets, batch, workers, input format and augmentations.
    train, test = lazy.dataloader.train, lazy.dataloader.test
    assert train.total_batch_size == s.IMS_PER_BATCH
    assert train.num_workers == test.num_workers == yaml_cfg.DATALOADER.NUM_WORKERS
    assert [train.dataset.names] == list(yaml_cfg.DATASETS.TRAIN)
    assert [test.dataset.names] == [lazy.dataloader.evaluator.dataset_name] == list(yaml_cfg.DATASETS.TEST)
    assert train.mapper.image_format == test.mapper.image_format == yaml_cfg.INPUT.FORMAT
    for is_train, mapper in ((True, train.mapper), (False, test.mapper)):
        expected = DatasetMapper.from_config(yaml_cfg, is_train)["augmentations"]
        assert [_augmentation(a) for a in instantiate(mapper.augmentations)] == [_augmentation(a) for a in expected]


def test_shapes_lazyconfig_model_equals_yaml_model(single_thread, make_batch):
    lazy, yaml_cfg, lazy_model, yaml_model = _build_pair("shapes_R18_cpu")
    assert lazy.train.device == yaml_cfg.MODEL.DEVICE == "cpu"
    _assert_same_architecture(lazy_model, yaml_model)
    _assert_same_solver_and_data(lazy, yaml_cfg, lazy_model, yaml_model)

    # Same weights (strict), with class biases spread so that there are detections to compare.
    weights = lazy_model.state_dict()
    weights["head.cls_score.bias"] = torch.randn(weights["head.cls_score.bias"].shape, generator=torch.Generator().manual_seed(0))
    lazy_model.load_state_dict(weights, strict=True)
    yaml_model.load_state_dict(weights, strict=True)

    g = torch.Generator().manual_seed(5)
    images = [{"image": torch.rand(3, h, w, generator=g) * 255, "height": h * 2, "width": w * 2} for h, w in ((128, 160), (96, 128))]
    lazy_model.eval(), yaml_model.eval()
    with torch.no_grad():
        out_a, out_b = lazy_model(images), yaml_model(images)
    for a, b in zip(out_a, out_b):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b) > 0
        assert a.image_size == b.image_size
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.allclose(a.scores, b.scores, rtol=0, atol=1e-4)
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-3)

    batch = make_batch()
    lazy_model.train(), yaml_model.train()
    with EventStorage():
        losses_a, losses_b = lazy_model(batch), yaml_model(batch)
    assert losses_a.keys() == losses_b.keys() == {"loss_cls", "loss_box_reg"}
    for key in losses_a:
        assert torch.isfinite(losses_a[key])
        assert losses_a[key].item() == pytest.approx(losses_b[key].item(), rel=1e-5), key


@pytest.mark.parametrize("name", ["retinanet_R50", "retinanet_R101"])
def test_coco_lazyconfig_builds_the_yaml_model_and_solver(name):
    lazy, yaml_cfg, lazy_model, yaml_model = _build_pair(name)
    _assert_same_architecture(lazy_model, yaml_model)
    _assert_same_solver_and_data(lazy, yaml_cfg, lazy_model, yaml_model)
    assert lazy.train.device == "cuda"  # Detectron2's default device, as the YAML's MODEL.DEVICE
