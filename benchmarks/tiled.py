"""
Tiled inference of one large synthetic image with RetinaNetPlugin R50-FPN (bench.py's weights),
in float32 and in int8 (calibrated on four other synthetic tile-sized images):

    python benchmarks/tiled.py [--size 2048] [--tile 512] [--overlap 0.2] [--tile-batch 4] [--threads N]

Prints the time of a first call (int8 packs its weights for the tile shape then) and of a second.
"""
import argparse
import copy
import time

import torch

import bench
from retina_plugin.quantization import calibrate_int8, quantize_int8
from retina_plugin.tiling import TiledInference

CALIBRATION_SEEDS = (5, 6, 7, 8)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="side of the square image")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--tile-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = bench.build_ours("cpu")
    image = bench.bgr_tensor(bench.synthetic_image(args.size, args.size, seed=11, num_shapes=60)[0], "cpu")
    calibration = [
        [{"image": bench.bgr_tensor(bench.synthetic_image(args.tile, args.tile, seed=s)[0], "cpu")}]
        for s in CALIBRATION_SEEDS
    ]
    int8 = quantize_int8(copy.deepcopy(model), calibrate_int8(model, calibration))
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


if __name__ == "__main__":
    main()
