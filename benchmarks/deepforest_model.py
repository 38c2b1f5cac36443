"""
A DeepForest tree model trained here, for benchmarks/deepforest.py's int8 recall target (issue
27): a random-weight model's detections are near-ties everywhere, so int8 rounding reorders
them and the recall of float32 says nothing. Nothing is downloaded: the model learns the
generated scenes' shapes (retina_plugin.geo.scenes), labelled "Tree", from random weights.

    python benchmarks/deepforest_model.py --output /work/dfb-model [--iterations 250] [--threads 2]

One command, four steps, each left in --workdir:
1. a training scene: a 2048 x 2048 GeoTIFF of seed 1 (the benchmark's raster is seed 0, so
   it is not seen in training) and its objects as polygons labelled "Tree";
2. the config: `--from deepforest`'s (retina_plugin.weights.torchvision_config: torchvision's
   v1 RetinaNet, ResNet-50-FPN, 1 class, DeepForest's thresholds) with TRAINING_OPTS;
3. tools/train_net.py on the scene's tiles (Detectron2's DefaultTrainer; log in
   WORKDIR/train/log.txt);
4. tools/convert_weights.py --to deepforest: OUTPUT/model.safetensors + config.json, as
   DeepForest saves a model (`deepforest.main.deepforest(config_args={"model": {"name": OUTPUT}})`
   loads it).

Training sees 96 px tiles resized to 192 px: the 2x of DeepForest's predict_tile (400 px
windows resized to 800), so the shapes (10-20 px) are as large for the network in training as
in prediction, at a seventeenth of an 800 px window's cost. A checkpoint every 50 iterations
(WORKDIR/train/model_00000NN.pth) can be converted by hand if the run must stop early.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEL = "Tree"
TRAIN_SIZE, TRAIN_SEED = 2048, 1
# DeepForest's conf/config.yaml test settings, which --to deepforest writes into config.json.
DEEPFOREST_TEST = {"score_thresh": 0.1, "nms_thresh": 0.05, "detections_per_img": 300, "topk_candidates": 1000}
# From random weights the ResNet needs a trainable norm (FrozenBN's identity statistics
# diverge) and no frozen stage; in eval mode BN is FrozenBN's arithmetic, so the conversion
# reads the trained weights with MODEL.RESNETS.NORM FrozenBN. At BASE_LR 0.01 (warm-up 50,
# no clipping) the losses went NaN at iteration 60, as the rate reached 0.01.
TRAINING_OPTS = [
    "MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.RETINA_PLUGIN.TILE_SIZE", "96", "MODEL.RETINA_PLUGIN.TILE_OVERLAP", "0.25",
    "INPUT.MIN_SIZE_TRAIN", "(192,)", "INPUT.MAX_SIZE_TRAIN", "192",
    "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.005", "SOLVER.WARMUP_ITERS", "100",
    "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "5.0",
    "SOLVER.CHECKPOINT_PERIOD", "50", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "SEED", "0",
]  # fmt: skip


def write_training_scene(workdir: Path):
    """The training GeoTIFF and its objects (.gpkg, label LABEL); their paths."""
    import geopandas as gpd

    from retina_plugin.geo.scenes import write_shapes_scene
    from retina_plugin.geo.vectors import boxes_to_polygons

    raster, vectors = workdir / f"train_{TRAIN_SIZE}.tif", workdir / f"train_{TRAIN_SIZE}.gpkg"
    scene = write_shapes_scene(str(raster), TRAIN_SIZE, seed=TRAIN_SEED, single_class=True)
    frame = gpd.GeoDataFrame({"label": [LABEL] * len(scene.boxes)}, geometry=boxes_to_polygons(scene.boxes, scene.transform), crs=scene.crs)
    frame.to_file(str(vectors), driver="GPKG", engine="pyogrio")
    print(f"training scene: {raster} ({TRAIN_SIZE}², seed {TRAIN_SEED}), {len(scene.boxes)} objects in {vectors}", flush=True)
    return raster, vectors


def write_training_config(workdir: Path) -> Path:
    """The config --from deepforest writes for a 1-class model, without weights (random init)."""
    from retina_plugin.weights.torchvision_config import DEEPFOREST_KEYS, converted_config

    cfg = converted_config("deepforest", 1, "", {DEEPFOREST_KEYS[k]: v for k, v in DEEPFOREST_TEST.items()})
    path = workdir / "deepforest_v1_1class.yaml"
    path.write_text("# retina_plugin.weights.torchvision_config.converted_config('deepforest', 1 class), no weights\n" + cfg.dump())
    return path


def run_tool(tool: str, args, threads: int) -> None:
    """tools/<tool>.py in its own process, its output shown as it comes; raises if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    command = [sys.executable, str(ROOT / "tools" / f"{tool}.py"), *map(str, args)]
    print("$ " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, env=env, cwd=str(ROOT))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the DeepForest model folder to write (model.safetensors + config.json)")
    parser.add_argument("--workdir", help="the scene, config and training run (default: OUTPUT/../<name>_work)")
    parser.add_argument("--iterations", type=int, default=250, help="SOLVER.MAX_ITER (the learning rate drops 10x at 80 %%)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    output = Path(args.output).resolve()
    workdir = Path(args.workdir).resolve() if args.workdir else output.with_name(output.name + "_work")
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    raster, vectors = write_training_scene(workdir)
    config = write_training_config(workdir)
    schedule = ["SOLVER.MAX_ITER", args.iterations, "SOLVER.STEPS", f"({int(args.iterations * 0.8)},)"]
    train_dir = workdir / "train"
    run_tool("train_net", ["--config-file", config, "--train-raster", raster, "--train-vectors", vectors,
                           *TRAINING_OPTS, *schedule, "OUTPUT_DIR", train_dir], args.threads)  # fmt: skip
    run_tool("convert_weights", ["--to", "deepforest", "--config-file", train_dir / "config.yaml",
                                 "--input", train_dir / "model_final.pth", "--output", output,
                                 "MODEL.RESNETS.NORM", "FrozenBN"], args.threads)  # fmt: skip
    print(f"DeepForest model in {output} ({(time.perf_counter() - start) / 60:.1f} min); training log {train_dir / 'log.txt'}")


if __name__ == "__main__":
    main()
