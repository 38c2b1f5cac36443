"""
DeepForest's side of tests/geo/test_deepforest_parity.py and benchmarks/deepforest.py, run by
the peer venv's interpreter (`.venv-peers/bin/python`, scripts/setup_peers_venv.sh):

    deepforest_peer.py DIR --save-random [--seed 0] [--images RASTER]
        a DeepForest tree model (`RetinaNetHub`, DeepForest's torchvision RetinaNet) with random
        weights whose scores on RASTER's windows spread around DeepForest's 0.1 threshold, saved
        as DeepForest saves it (`save_pretrained`: DIR/model.safetensors + DIR/config.json)
    deepforest_peer.py DIR --predict-tile RASTER --out OUT.json [--patch-size 400]
            [--patch-overlap 0.05] [--iou-threshold 0.15] [--threads N]
        the model in DIR loaded as a DeepForest user loads one (`deepforest.main.deepforest` with
        config_args model.name DIR and its config.json's label_dict), `predict_tile(RASTER)` timed after one warm-up window; OUT.json
        holds the boxes in pixels (xmin, ymin, xmax, ymax), score, label, seconds, peak RSS

Both in one run save one import of DeepForest (~7 s of CPU).

Nothing is downloaded. DeepForest builds its model with `retinanet_resnet50_fpn(weights=None)`,
whose default `weights_backbone` is torchvision's ImageNet ResNet-50: torchvision would download
it. A ResNet-50 of random weights saved under that file's name in a private TORCH_HOME takes its
place (it is overwritten by the model's own weights when they load, and keeps DeepForest's
FrozenBatchNorm2d backbone, as in its released models).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch

from random_weights import spread_random_weights  # scripts/random_weights.py, beside this script

LABEL_DICT = {"Tree": 0}
# DeepForest's conf/config.yaml: what main.deepforest passes to the model it builds or loads.
SCORE_THRESH, NMS_THRESH = 0.1, 0.05
# Side of the images the BN statistics are measured on (DeepForest's window).
STAT_SIZE = 400


def use_placeholder_backbone(torch_home: str) -> None:
    """Point TORCH_HOME at a folder holding a random ResNet-50 under the ImageNet weights' file name."""
    from torchvision.models import ResNet50_Weights, resnet50

    os.environ["TORCH_HOME"] = torch_home
    folder = os.path.join(torch_home, "hub", "checkpoints")
    path = os.path.join(folder, os.path.basename(ResNet50_Weights.IMAGENET1K_V1.url))
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        torch.save(resnet50(weights=None).state_dict(), path + ".tmp")
        os.replace(path + ".tmp", path)


def raster_windows(path: str, count: int = 3):
    """`count` STAT_SIZE windows of the raster along its diagonal, (3, STAT_SIZE, STAT_SIZE) floats in [0, 1]."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as source:
        side = min(STAT_SIZE, source.width, source.height)
        step = (min(source.width, source.height) - side) // max(1, count - 1)
        return [torch.from_numpy(source.read([1, 2, 3], window=Window(i * step, i * step, side, side))).float() / 255 for i in range(count)]


def save_random(args) -> None:
    from torchvision.models.detection import retinanet_resnet50_fpn
    from deepforest.models.retinanet import RetinaNetHub

    torch.manual_seed(args.seed)
    trained_like = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(LABEL_DICT))
    if args.images:
        images = raster_windows(args.images)
    else:
        images = [torch.rand(3, STAT_SIZE, STAT_SIZE) for _ in range(3)]
    spread_random_weights(trained_like, images[:2], images[2:])
    # As deepforest.models.retinanet.Model.create_model builds it, with DeepForest's thresholds.
    model = RetinaNetHub(num_classes=len(LABEL_DICT), nms_thresh=NMS_THRESH, score_thresh=SCORE_THRESH, label_dict=LABEL_DICT)
    model.load_state_dict(trained_like.state_dict())  # FrozenBatchNorm2d drops num_batches_tracked
    model.save_pretrained(args.dir)
    print(f"saved a random DeepForest model (seed {args.seed}) to {args.dir}: {sorted(os.listdir(args.dir))}")


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def predict_tile(args) -> None:
    import numpy as np
    from deepforest import main

    torch.set_num_threads(args.threads or torch.get_num_threads())
    with open(os.path.join(args.dir, "config.json")) as f:
        label_dict = json.load(f).get("label_dict", LABEL_DICT)  # the model's classes, as save_pretrained wrote them
    model = main.deepforest(config_args={"model": {"name": args.dir}, "num_classes": len(label_dict), "label_dict": label_dict})
    model.create_trainer(enable_progress_bar=False, logger=False)
    warm = np.full((args.patch_size, args.patch_size, 3), 128, np.uint8)
    model.predict_tile(image=warm, patch_size=args.patch_size, patch_overlap=args.patch_overlap, iou_threshold=args.iou_threshold)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM back to the current RSS
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    boxes = model.predict_tile(
        path=args.predict_tile, patch_size=args.patch_size, patch_overlap=args.patch_overlap, iou_threshold=args.iou_threshold
    )  # fmt: skip
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss_before, "threads": torch.get_num_threads(),
        "deepforest": __import__("deepforest").__version__, "torch": torch.__version__,
    }  # fmt: skip
    for column in ("xmin", "ymin", "xmax", "ymax", "score"):
        result[column] = [] if boxes is None else [float(v) for v in boxes[column]]
    result["label"] = [] if boxes is None else [str(v) for v in boxes["label"]]
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"predict_tile: {len(result['score'])} boxes in {seconds:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB")


def main_cli(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="the DeepForest model folder (model.safetensors + config.json)")
    parser.add_argument("--save-random", action="store_true", help="first write a random model into DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", help="a 3-band raster whose windows set the BN statistics (default: random images)")
    parser.add_argument("--predict-tile", metavar="RASTER", help="then run predict_tile on RASTER")
    parser.add_argument("--out", help="the JSON file of --predict-tile's boxes and timing")
    parser.add_argument("--patch-size", type=int, default=400)
    parser.add_argument("--patch-overlap", type=float, default=0.05)
    parser.add_argument("--iou-threshold", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--torch-home", help="TORCH_HOME for the placeholder backbone (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.predict_tile and not args.out:
        parser.error("--predict-tile needs --out")
    with tempfile.TemporaryDirectory() as tmp:
        use_placeholder_backbone(args.torch_home or tmp)
        if args.save_random:
            save_random(args)
        if args.predict_tile:
            predict_tile(args)


if __name__ == "__main__":
    sys.exit(main_cli())
