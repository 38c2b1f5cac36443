"""
Detectron2's zoo LazyConfig switched to the plugin by the one-liner (docs/lazyconfig.md) trains and
evaluates with tools/lazyconfig_train_net.py: a real run of tests/engine/configs/zoo_retinanet_plugin.py.
"""
import torch

from test_lazy import _dataset_args, _tool

CONFIG = "tests/engine/configs/zoo_retinanet_plugin.py"


def test_zoo_lazyconfig_with_the_one_liner_trains_and_evaluates(tiny_shapes, tmp_path):
    out = tmp_path / "zoo"
    proc = _tool("--config-file", CONFIG, *_dataset_args(tiny_shapes), "train.max_iter=3", f"train.output_dir={out}")
    log = proc.stdout + proc.stderr
    assert "RetinaNetPlugin(" in log and "FocalLossHead(" in log  # the model printed by the trainer
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log  # the zoo's COCOEvaluator ran on --test-json
    checkpoint = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 2
    weights = checkpoint["model"]
    # 3 classes (from --train-json) x the zoo's 9 anchors; the zoo's ResNet-50
    assert weights["head.cls_score.weight"].shape[0] == 3 * 9
    assert weights["backbone.bottom_up.res5.2.conv3.weight"].shape[0] == 2048
    config = (out / "config.yaml").read_text()
    assert "_target_: retina_plugin.RetinaNetPlugin" in config and "smooth_l1_beta: 0.0" in config
    assert "RetinaNetHead" not in config  # the zoo's model is not kept beside the plugin's
