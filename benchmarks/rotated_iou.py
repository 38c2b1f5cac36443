"""
The exact rotated IoU and NMS of retina_plugin.ops against shapely 2's vectorised polygon
intersection (GEOS) and, where `detectron2._C` loads, Detectron2's compiled ops.

    python benchmarks/rotated_iou.py [--threads 2] [--repeats 3] [--device cpu] [--before DIR]

`--before DIR` adds rows for the ops of another version, timed in the same run: DIR holds its
`retina_plugin/ops` (`git archive COMMIT retina_plugin/ops | tar -x -C DIR`). Four tables, the median of `--repeats` calls after one untimed call: IoU pairs per second on
overlapping pairs; the IoU matrix of Detectron2's RotatedAnchorGenerator's anchors for a
640x640 image (3 angles) against 200 boxes, culled and dense (the dense time is measured on a
tenth of the anchors and scaled, stated in the row); greedy NMS of 2k and 10k clustered boxes,
and its ONNX form (`rotated_nms_onnx`) of 1k and 5k, in torch and in onnxruntime.
Not a test: it prints what it measures and the largest difference from the reference.
"""
import argparse
import importlib
import importlib.util
import os
import statistics
import sys

import numpy as np
import shapely
import torch
from detectron2.modeling.anchor_generator import RotatedAnchorGenerator
from detectron2.modeling.matcher import Matcher

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from measure import time_calls  # noqa: E402

from retina_plugin.deploy.export import ONNX_OPSET  # noqa: E402
from retina_plugin.ops.rotated_nms_onnx import batched_nms_rotated_onnx  # noqa: E402

from retina_plugin.ops import (  # noqa: E402
    matched_iou_rotated, nms_rotated, batched_nms_rotated, overlap_candidates, pairwise_iou_rotated, rotated_box_corners,
)


def random_boxes(n, g, extent, min_size, max_size):
    """(n, 5) float32 boxes: centres in [0, extent)², sizes log-uniform, angles in [-180, 180)."""
    sizes = torch.exp(np.log(min_size) + torch.rand(n, 2, generator=g) * (np.log(max_size) - np.log(min_size)))
    return torch.cat([torch.rand(n, 2, generator=g) * extent, sizes, torch.rand(n, 1, generator=g) * 360 - 180], 1)


def detectron2_layers():
    """Detectron2's layers if its compiled ops load, else the reason they do not."""
    try:
        importlib.import_module("detectron2._C")
        from detectron2 import layers
        return layers, None
    except ImportError as error:
        return None, str(error).splitlines()[0]


def other_ops(root):
    """`retina_plugin.ops` of another version, from root/retina_plugin/ops, as module `before_ops`."""
    folder = os.path.join(root, "retina_plugin", "ops")
    spec = importlib.util.spec_from_file_location(
        "before_ops", os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["before_ops"] = module
    spec.loader.exec_module(module)
    return module


def polygons(boxes):
    return shapely.polygons(rotated_box_corners(boxes.double().cpu()).numpy())


def iou_table(median, device, pairs, before):
    g = torch.Generator().manual_seed(0)
    boxes1 = random_boxes(pairs, g, 200.0, 4.0, 60.0)
    boxes2 = boxes1.clone()
    boxes2[:, :2] += torch.rand(pairs, 2, generator=g) * 20 - 10
    boxes2[:, 2:] = random_boxes(pairs, g, 1.0, 4.0, 60.0)[:, 2:]
    b1, b2 = boxes1.to(device), boxes2.to(device)
    ours_ms = median(lambda: matched_iou_rotated(b1, b2))
    p1, p2 = polygons(boxes1), polygons(boxes2)
    area1, area2 = shapely.area(p1), shapely.area(p2)

    def shapely_iou():
        inter = shapely.area(shapely.intersection(p1, p2))
        return inter / (area1 + area2 - inter)

    shapely_ms = median(shapely_iou)
    build_ms = median(lambda: (polygons(boxes1), polygons(boxes2)))
    error = np.abs(matched_iou_rotated(b1, b2).double().cpu().numpy() - shapely_iou()).max()
    rows = [
        f"| ours, `matched_iou_rotated` ({device}) | {ours_ms:.0f} | {pairs / ours_ms / 1e3:.2f} | {error:.1e} |",
        f"| shapely {shapely.__version__} `intersection` + `area` (polygons built) | {shapely_ms:.0f} | {pairs / shapely_ms / 1e3:.2f} | reference |",
        f"| shapely, with building the polygons from the boxes | {shapely_ms + build_ms:.0f} | {pairs / (shapely_ms + build_ms) / 1e3:.2f} | |",
    ]
    if before is not None:
        before_ms = median(lambda: before.matched_iou_rotated(b1, b2))
        before_error = np.abs(before.matched_iou_rotated(b1, b2).double().cpu().numpy() - shapely_iou()).max()
        rows.insert(1, f"| `--before`'s `matched_iou_rotated` ({device}) | {before_ms:.0f} | {pairs / before_ms / 1e3:.2f} | {before_error:.1e} |")
    layers, why = detectron2_layers()
    side = int(pairs ** 0.5)
    if layers is None:
        rows.append(f"| Detectron2 compiled `pairwise_iou_rotated` | not loadable: {why} | | |")
    else:
        d2_ms = median(lambda: layers.pairwise_iou_rotated(b1[:side], b2[:side]))
        rows.append(f"| Detectron2 compiled `pairwise_iou_rotated` ({side}x{side}) | {d2_ms:.0f} | {side * side / d2_ms / 1e3:.2f} | |")
    print(f"\nExact IoU of {pairs} overlapping pairs (float32 boxes)\n")
    print("| implementation | ms | million pairs / s | max abs difference from shapely |")
    print("|---|---|---|---|")
    print("\n".join(rows))


def anchors_and_boxes(device):
    generator = RotatedAnchorGenerator(
        sizes=[[s * 2 ** (k / 3) for k in range(3)] for s in (32, 64, 128, 256, 512)],
        aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16, 32, 64, 128], angles=[[-60, 0, 60]], offset=0.0,
    )
    features = [torch.zeros(1, 1, 640 // s, 640 // s) for s in (8, 16, 32, 64, 128)]
    anchors = torch.cat([a.tensor for a in generator(features)]).to(device)
    boxes = random_boxes(200, torch.Generator().manual_seed(1), 640.0, 12.0, 160.0).to(device)
    return anchors, boxes


def matching_table(median, device, before):
    anchors, boxes = anchors_and_boxes(device)
    n, m = anchors.shape[0], boxes.shape[0]
    culled_ms = median(lambda: pairwise_iou_rotated(boxes, anchors))
    candidates = overlap_candidates(boxes, anchors)[0].numel()
    iou = pairwise_iou_rotated(boxes, anchors)
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    matcher_ms = median(lambda: matcher(iou))
    tenth = anchors[: n // 10]

    def dense():  # the exact IoU of every pair, in the chunks of matched_iou_rotated
        t = tenth.shape[0]
        pairs1, pairs2 = boxes[:, None].expand(m, t, 5).reshape(-1, 5), tenth[None].expand(m, t, 5).reshape(-1, 5)
        return matched_iou_rotated(pairs1, pairs2).reshape(m, t)

    dense_ms = median(dense)
    same = torch.equal(dense(), iou[:, : n // 10])
    print(f"\nIoU matrix of {n} rotated anchors (640x640 image, 9 anchors x 3 angles per location) x {m} boxes\n")
    print("| step | ms | pairs given the exact IoU |")
    print("|---|---|---|")
    print(f"| `pairwise_iou_rotated` (culled) | {culled_ms:.0f} | {candidates} of {n * m} |")
    if before is not None:
        before_ms = median(lambda: before.pairwise_iou_rotated(boxes, anchors))
        difference = (before.pairwise_iou_rotated(boxes, anchors) - iou).abs().max()
        print(f"| `--before`'s `pairwise_iou_rotated` (culled; max difference {difference:.1e}) | {before_ms:.0f} | "
              f"{before.overlap_candidates(boxes, anchors)[0].numel()} of {n * m} |")
    print(f"| dense exact IoU of every pair (measured on {n // 10} anchors, x{n / (n // 10):.1f}) | {dense_ms * n / (n // 10):.0f} | {n * m} |")
    print(f"| Detectron2 `Matcher` on the matrix | {matcher_ms:.0f} | |")
    print(f"\nculled matrix equal to the dense one on those {n // 10} anchors: {same}")


def clustered(n, device, seed=2):
    g = torch.Generator().manual_seed(seed)
    objects = n // 20
    centres = torch.rand(objects, 2, generator=g) * 1024
    boxes = random_boxes(n, g, 16.0, 10.0, 80.0)
    boxes[:, :2] += centres[torch.randint(objects, (n,), generator=g)] - 8
    return boxes.to(device), torch.rand(n, generator=g).to(device), torch.randint(10, (n,), generator=g).to(device)


def nms_table(median, device, before):
    layers, why = detectron2_layers()
    print("\nGreedy NMS at IoU 0.5 of clustered boxes (20 per object, 1024x1024)\n")
    extra = " `--before`'s `nms_rotated` ms | its `batched_nms_rotated` ms |" if before is not None else ""
    print("| boxes | `nms_rotated` ms | kept | `batched_nms_rotated` (10 classes) ms | kept |" + extra
          + " Detectron2 compiled `nms_rotated` ms |")
    print("|---" * (6 + 2 * (before is not None)) + "|")
    for n in (2000, 10000):
        boxes, scores, classes = clustered(n, device)
        single_ms = median(lambda: nms_rotated(boxes, scores, 0.5))
        batched_ms = median(lambda: batched_nms_rotated(boxes, scores, classes, 0.5))
        kept, kept_batched = nms_rotated(boxes, scores, 0.5).numel(), batched_nms_rotated(boxes, scores, classes, 0.5).numel()
        theirs = f"not loadable: {why}" if layers is None else f"{median(lambda: layers.nms_rotated(boxes, scores, 0.5)):.0f}"
        if before is not None:
            before_single = median(lambda: before.nms_rotated(boxes, scores, 0.5))
            before_batched = median(lambda: before.batched_nms_rotated(boxes, scores, classes, 0.5))
            theirs = f"{before_single:.0f} | {before_batched:.0f} | {theirs}"
        print(f"| {n} | {single_ms:.0f} | {kept} | {batched_ms:.0f} | {kept_batched} | {theirs} |")


def onnx_nms_table(median, threads):
    """The ONNX form of the NMS (`--format onnx` of a rotated model), eager and in onnxruntime."""
    import tempfile

    import onnxruntime

    print("\nThe ONNX form of `batched_nms_rotated` (IoU 0.5, the same clustered boxes; CPU)\n")
    print("| boxes | classes | `batched_nms_rotated` ms | `batched_nms_rotated_onnx` ms (torch) | onnxruntime ms | kept | same kept, same order |")
    print("|---" * 7 + "|")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "nms.onnx")
        boxes, scores, classes = clustered(200, "cpu")
        dynamic = {"boxes": {0: "n"}, "scores": {0: "n"}, "classes": {0: "n"}, "kept": {0: "k"}}
        torch.onnx.export(_OnnxNms(), (boxes, scores, classes), path, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["boxes", "scores", "classes"], output_names=["kept"], dynamic_axes=dynamic)
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for n, classes_used in ((1000, 1), (1000, 10), (5000, 1), (5000, 10)):
            boxes, scores, classes = clustered(n, "cpu")
            classes = classes % classes_used
            feeds = {"boxes": boxes.numpy(), "scores": scores.numpy(), "classes": classes.numpy()}
            kept = batched_nms_rotated(boxes, scores, classes, 0.5)
            same = torch.equal(batched_nms_rotated_onnx(boxes, scores, classes, 0.5), kept)
            same = same and session.run(None, feeds)[0].tolist() == kept.tolist()
            eager_ms = median(lambda: batched_nms_rotated(boxes, scores, classes, 0.5))
            onnx_torch_ms = median(lambda: batched_nms_rotated_onnx(boxes, scores, classes, 0.5))
            ort_ms = median(lambda: session.run(None, feeds))
            print(f"| {n} | {classes_used} | {eager_ms:.0f} | {onnx_torch_ms:.0f} | {ort_ms:.0f} | {kept.numel()} | {same} |")


class _OnnxNms(torch.nn.Module):
    def forward(self, boxes, scores, classes):
        return batched_nms_rotated(boxes, scores, classes, 0.5)  # the ONNX form while exporting


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=1 << 18)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--before", help="a folder holding retina_plugin/ops of another version, timed in the same run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def median(fn):
        return statistics.median(time_calls(fn, args.repeats, 1, args.device)[0]) * 1e3

    line = harness.machine_line(args.threads)
    if args.device.startswith("cuda"):
        line += f"; {torch.cuda.get_device_name()}"
    print(line)
    print(f"\n1-minute load average at the start: {harness.load_average():.1f}")
    before = other_ops(args.before) if args.before else None
    iou_table(median, args.device, args.pairs, before)
    matching_table(median, args.device, before)
    nms_table(median, args.device, before)
    onnx_nms_table(median, args.threads)
    print(f"\n1-minute load average at the end: {harness.load_average():.1f}")


if __name__ == "__main__":
    main()
