#!/usr/bin/env python
"""
Export RetinaNetPlugin to TorchScript or ONNX, like Detectron2's tools/deploy/export_model.py.

    python tools/export_model.py --config-file configs/shapes_R18_cpu.yaml --format torchscript \
        --export-method tracing --output export/ --opts MODEL.WEIGHTS output/shapes_R18_cpu/model_final.pth
    python tools/export_model.py --config-file configs/retinanet_R50.yaml --format onnx \
        --output export/ --sample-image img.jpg --check --opts MODEL.WEIGHTS model_final.pth

Writes export/model.ts or export/model.onnx: one (3, H, W) float32 image in, boxes (R, 4),
scores (R,), classes (R,) out (see retina_plugin/export.py). The model is traced on
--sample-image, resized as DefaultPredictor resizes, or on a generated image of the test size.
--check runs the exported and the eager model on that image and prints their differences.
"""
import argparse
import os
import sys
import warnings

# Detectron2 and torch warn on import and on every export that torch.jit and the
# TorchScript-based ONNX exporter are deprecated; they are what this export uses.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retina_plugin.config import ConfigError, load_config  # noqa: E402
import retina_plugin  # noqa: E402,F401  (registers the components)
from retina_plugin.export import (  # noqa: E402
    EXPORT_FORMATS,
    EXPORT_METHODS,
    ExportError,
    build_model_for_export,
    check_export_request,
    compare_detections,
    eager_detections,
    export_model,
    run_exported,
    sample_image,
)

LOAD_INSTRUCTIONS = {
    "torchscript": """\
    import torch, torchvision  # torchvision registers torchvision::nms, which the graph calls
    model = torch.jit.load("{path}")
    boxes, scores, classes = model(image)  # image: (3, H, W) float32 {fmt}, 0..255""",
    "onnx": """\
    import onnxruntime
    session = onnxruntime.InferenceSession("{path}", providers=["CPUExecutionProvider"])
    boxes, scores, classes = session.run(None, {{"image": image}})  # (3, H, W) float32 {fmt} numpy""",
}


def get_parser():
    """The export's command-line arguments."""
    parser = argparse.ArgumentParser(description="Export RetinaNetPlugin to TorchScript or ONNX")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript", help="output format")
    parser.add_argument("--export-method", choices=EXPORT_METHODS, default="tracing", help="how to export")
    parser.add_argument("--output", required=True, metavar="DIR", help="directory for model.ts / model.onnx")
    parser.add_argument(
        "--sample-image",
        metavar="FILE",
        help="image to trace and check on (default: a generated image of the config's test size)",
    )
    parser.add_argument(
        "--check", action="store_true", help="run the exported and the eager model on the sample image and compare"
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config options as KEY VALUE pairs, merged last, e.g. MODEL.WEIGHTS model.pth",
    )
    return parser


def setup_cfg(args):
    """The config: defaults, then --config-file, then --opts."""
    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
        raise ExportError(str(e)) from None
    cfg.freeze()
    return cfg


def main(argv=None):
    """Parse the arguments, export the model, print how to load it and, with --check, the differences."""
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="retina_plugin")
    logger = setup_logger(name="export")
    # Tracing warns about every assert in Detectron2's structures that it records as constant;
    # that the graph still generalizes is what tests/test_export.py checks.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    # The ONNX exporter's caveat for negative indices: the graph indexes with nonzero / topk output.
    warnings.filterwarnings("ignore", message="Exporting aten::index operator")
    try:
        check_export_request(args.format, args.export_method)
        cfg = setup_cfg(args)
        image = sample_image(cfg, args.sample_image)
        model = build_model_for_export(cfg)
        path = export_model(model, image, args.output, args.format, args.export_method)
    except ExportError as e:
        sys.exit(f"export_model.py: error: {e}")
    size_mb = os.path.getsize(path) / 2**20
    logger.info(f"traced on a {tuple(image.shape)} image; wrote {path} ({size_mb:.1f} MiB)")
    print(f"Load it with:\n{LOAD_INSTRUCTIONS[args.format].format(path=path, fmt=cfg.INPUT.FORMAT)}")
    if args.check:
        result = compare_detections(run_exported(path, image), eager_detections(model, image))
        box_diff, score_diff = (
            "n/a" if x is None else f"{x:.3g}" for x in (result["max_box_diff"], result["max_score_diff"])
        )
        print(
            f"check ({args.format} vs eager, {tuple(image.shape)} image): detections {result['count'][0]} vs "
            f"{result['count'][1]}, classes equal {result['classes_equal']}, max |box diff| {box_diff} px, "
            f"max |score diff| {score_diff}: {'OK' if result['match'] else 'MISMATCH'}"
        )
        if not result["match"]:
            sys.exit(1)


if __name__ == "__main__":
    main()
