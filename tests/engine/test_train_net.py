"""tools/train_net.py end to end, in real subprocesses: train, checkpoint, evaluate, resume, DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tool_runs import CONFIG, QUICK_OPTS, REPO, dataset_args, read_metrics, run_tool


def test_train_checkpoint_evaluate_resume(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", str(CONFIG), *dataset_args(tiny_shapes)]
    run_tool("tools/train_net.py", *common, *QUICK_OPTS, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(out))

    assert (out / "model_0000001.pth").is_file() and (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    train_lines = [m for m in read_metrics(out) if "total_loss" in m]
    assert [m["iteration"] for m in train_lines][-1] == 3
    assert all(torch.isfinite(torch.tensor(m["total_loss"])) for m in train_lines)
    # COCOEvaluator ran on the test split and wrote its detections.
    detections = json.loads((out / "inference" / "user_test_instances_val" / "coco_instances_results.json").read_text())
    assert isinstance(detections, list)
    assert any("bbox/AP" in m for m in read_metrics(out))
    checkpoint = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == 3
    assert "head.cls_score.weight" in checkpoint["model"]
    categories = json.loads((tiny_shapes / "annotations" / "instances_train.json").read_text())["categories"]
    assert checkpoint["class_names"] == [c["name"] for c in sorted(categories, key=lambda c: c["id"])]

    # --resume continues from the saved iteration, not from 0.
    run_tool("tools/train_net.py", "--resume", *common, *QUICK_OPTS, "SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(out))
    iterations = [m["iteration"] for m in read_metrics(out) if "total_loss" in m]
    assert iterations[-1] == 5
    assert iterations == [3, 5], iterations  # metrics are written at the last iteration of each run
    assert "Starting training from iteration 4" in (out / "log.txt").read_text()
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"] == 5

    # --eval-only loads the weights and evaluates.
    proc = run_tool("tools/train_net.py", "--eval-only", *common, *QUICK_OPTS, "OUTPUT_DIR", str(tmp_path / "eval"),
                "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert "Evaluation results for bbox" in proc.stdout + proc.stderr
    # ... and reports its throughput over the whole test split (tiny_shapes: 4 val images).
    throughput = json.loads((tmp_path / "eval" / "inference" / "throughput.json").read_text())
    assert throughput["images"] == 4 and throughput["datasets"] == ["user_test_instances_val"]
    assert 0 < throughput["model_seconds"] <= throughput["loop_seconds"]
    assert throughput["images_per_second"] == pytest.approx(4 / throughput["loop_seconds"])
    assert "Evaluation throughput on user_test_instances_val: 4 images in" in proc.stdout


def test_two_cpu_processes_train_to_identical_weights(tiny_shapes, tmp_path):
    out = tmp_path / "ddp"
    run_tool("tests/engine/train_worker.py", "--num-gpus", "2", "--config-file", str(CONFIG), *dataset_args(tiny_shapes),
         *QUICK_OPTS, "SOLVER.MAX_ITER", "3", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out))
    rank0 = torch.load(out / "rank0_weights.pth")
    rank1 = torch.load(out / "rank1_weights.pth")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # They trained: the checkpoint rank 0 wrote holds the same weights, moved from the prior init.
    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 2
    assert torch.equal(saved["model"]["head.cls_score.weight"], rank0["head.cls_score.weight"])
    assert not torch.allclose(rank0["head.cls_score.bias"], torch.full_like(rank0["head.cls_score.bias"], -4.59512), atol=1e-6)


def test_detectron2_zoo_config_trains_and_evaluates_with_meta_architecture_switched(tiny_shapes, tmp_path):
    from detectron2 import model_zoo

    zoo_config = model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    out = tmp_path / "zoo"
    # The zoo's R50-FPN 1x as it ships, switched by META_ARCHITECTURE; the rest sizes the run for
    # the CPU and the tiny dataset (no ImageNet weights are downloaded: random init, low LR).
    proc = run_tool(
        "tools/train_net.py", "--config-file", zoo_config, *dataset_args(tiny_shapes),
        "MODEL.META_ARCHITECTURE", "RetinaNetPlugin", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        *QUICK_OPTS, "SOLVER.BASE_LR", "0.001", "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out),
    )
    config = (out / "config.yaml").read_text()
    assert "META_ARCHITECTURE: RetinaNetPlugin" in config
    assert "NAME: build_retinanet_resnet_fpn_backbone" in config and "NAME: DefaultAnchorGenerator" in config
    # COCOEvaluator ran on the test split (3 iterations from random init detect nothing yet: AP nan)
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in proc.stdout + proc.stderr
    results = out / "inference" / "user_test_instances_val" / "coco_instances_results.json"
    assert isinstance(json.loads(results.read_text()), list)
    weights = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    # 3 classes (from --train-json) x 9 anchors of the zoo's SIZES x ASPECT_RATIOS
    assert weights["head.cls_score.weight"].shape[0] == 3 * 9
    assert weights["backbone.bottom_up.res5.2.conv3.weight"].shape[0] == 2048  # the zoo's ResNet-50


def _one_error_line(proc, prog="train_net"):
    """The run failed with status 2 and one `prog: error:` line, no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_design_card_command_without_cuda_says_to_use_the_cpu():
    if torch.cuda.is_available():
        return  # the machine has CUDA: the command trains
    proc = run_tool("tools/train_net.py", "--config-file", "configs/retinanet_R101.yaml", "--num-gpus", "8", check=False)
    line = _one_error_line(proc)
    assert "no CUDA device" in line and "MODEL.DEVICE cpu" in line


def test_coco_not_prepared_names_the_file_and_detectron2_datasets(tmp_path):
    env_root = tmp_path / "nothing_here"
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", "configs/retinanet_R101.yaml", "MODEL.DEVICE", "cpu"],
        cwd=REPO, env=dict(os.environ, DETECTRON2_DATASETS=str(env_root)), capture_output=True, text=True, timeout=300,
    )
    line = _one_error_line(proc)
    assert str(env_root / "coco" / "annotations") in line and "$DETECTRON2_DATASETS" in line


def test_missing_image_stops_training_with_one_line_naming_it(tiny_shapes, tmp_path):
    annotations = json.loads((tiny_shapes / "annotations" / "instances_train.json").read_text())
    missing = annotations["images"][0]["file_name"]
    images = tmp_path / "train"
    images.mkdir()
    for image in annotations["images"][1:]:
        (images / image["file_name"]).symlink_to(tiny_shapes / "train" / image["file_name"])
    proc = run_tool(
        "tools/train_net.py", "--config-file", str(CONFIG),
        "--train-json", str(tiny_shapes / "annotations" / "instances_train.json"), "--train-images", str(images),
        *QUICK_OPTS, "SOLVER.MAX_ITER", "20", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "out"), check=False,
    )
    line = _one_error_line(proc)
    assert missing in line and "user_train_instances_train" in line


def test_test_json_of_other_categories_fails_before_training(tiny_shapes, tmp_path):
    val = json.loads((tiny_shapes / "annotations" / "instances_val.json").read_text())
    val["categories"] = [{**c, "name": f"other_{c['name']}"} for c in val["categories"]]
    other = tmp_path / "other_val.json"
    other.write_text(json.dumps(val))
    proc = run_tool(
        "tools/train_net.py", "--config-file", str(CONFIG),
        "--train-json", str(tiny_shapes / "annotations" / "instances_train.json"), "--train-images", str(tiny_shapes / "train"),
        "--test-json", str(other), "--test-images", str(tiny_shapes / "val"),
        *QUICK_OPTS, "SOLVER.MAX_ITER", "20", "OUTPUT_DIR", str(tmp_path / "out"), check=False,
    )  # fmt: skip
    line = _one_error_line(proc)
    assert "dataset 'user_test_other_val' has classes ['other_" in line and "but the training dataset 'user_train_instances_train' has [" in line
    assert not (tmp_path / "out" / "model_final.pth").exists() and not (tmp_path / "out" / "metrics.json").exists()
