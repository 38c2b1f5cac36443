"""
RetinaNetPlugin R50-FPN (bench.py's weights) in float32 and in int8 where input shapes vary
(int8 packs its weights once per input shape, see retina_plugin/inference/int8/):

1. tiled inference of one large synthetic image (int8 calibrated on four other tile-sized
   images): the time of a first call (packing for the tile shape) and of a second;
2. eight 800-pixel-high images of widths 1088..1312 in turn, as a COCO-style test set gives
   them (int8 calibrated on two other 800x1216 images): seconds per image, and int8 on one size.

    python benchmarks/int8.py [--size 2048] [--tile 512] [--overlap 0.2] [--tile-batch 4] [--threads N]
"""
import argparse
import time

import torch

from inputs import INFER_SIZE, bgr_tensor, synthetic_image
from models import build_ours, calibrated_int8
from retina_plugin.inference.tiling import TiledInference

TILE_CALIBRATION_SEEDS = (5, 6, 7, 8)
SIZES_CALIBRATION_SEEDS = (5, 6)
WIDTHS = (1088, 1120, 1152, 1184, 1216, 1248, 1280, 1312)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="side of the square image")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--tile-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_ours("cpu")
    tiled_inference(model, args)
    image_sizes_in_turn(model)


def tiled_inference(model, args):
    image = bgr_tensor(synthetic_image(args.size, args.size, seed=11, num_shapes=60)[0], "cpu")
    int8 = calibrated_int8(model, args.tile, args.tile, TILE_CALIBRATION_SEEDS)
    print(f"{args.size}x{args.size} image, tiles of {args.tile} (overlap {args.overlap}, {args.tile_batch} per batch), {args.threads} threads")
    for name, m in (("float32", model), ("int8", int8)):
        tiled = TiledInference(m, tile_size=args.tile, overlap=args.overlap, tile_batch=args.tile_batch)
        times = []
        with torch.no_grad():
            for _ in range(2):
                start = time.perf_counter()
                detections = tiled.detect(image)
                times.append(time.perf_counter() - start)
        print(f"  {name:8s} first call {times[0]:.2f} s, second {times[1]:.2f} s, {len(detections)} detections")


def image_sizes_in_turn(model, rounds=2):
    int8 = calibrated_int8(model, *INFER_SIZE, SIZES_CALIBRATION_SEEDS)
    batches = [
        [{"image": bgr_tensor(synthetic_image(800, w, seed=20 + i)[0], "cpu")}] for i, w in enumerate(WIDTHS)
    ]
    print(f"{len(WIDTHS)} images 800 x {WIDTHS[0]}..{WIDTHS[-1]} in turn, {rounds} rounds")
    with torch.no_grad():
        for name, m in (("float32", model), ("int8", int8)):
            m(batches[0])
            start = time.perf_counter()
            for _ in range(rounds):
                for batch in batches:
                    m(batch)
            print(f"  {name:8s} {(time.perf_counter() - start) / (rounds * len(batches)):.3f} s per image")
        start = time.perf_counter()
        for _ in range(rounds * len(batches)):
            int8(batches[0])
        print(f"  int8 on one size: {(time.perf_counter() - start) / (rounds * len(batches)):.3f} s per image")

if __name__ == "__main__":
    main()
