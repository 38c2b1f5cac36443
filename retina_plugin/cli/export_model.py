"""
tools/export_model.py: export RetinaNetPlugin to TorchScript or ONNX, like Detectron2's tools/deploy/export_model.py.

    python tools/export_model.py --config-file configs/shapes_R18_cpu.yaml --format torchscript \
        --export-method tracing --output export/ --opts MODEL.WEIGHTS output/shapes_R18_cpu/model_final.pth
    python tools/export_model.py --config-file configs/retinanet_R50.yaml --format onnx \
        --output export/ --sample-image img.jpg --check --opts MODEL.WEIGHTS model_final.pth

Writes export/model.ts or export/model.onnx: one (C, H, W) float32 image in, C =
len(MODEL.PIXEL_MEAN) channels; boxes (R, 4) (rotated models: (R, 5) XYWHA), scores (R,),
classes (R,) out (see retina_plugin/deploy/export.py; --check: deploy/exported.py). --format onnx-network writes
export/network.onnx, the network and anchors without the postprocess, which then runs outside
(retina_plugin/deploy/network_export.py). The model is traced on --sample-image, resized as
DefaultPredictor resizes, or on a generated image of the test size (and channel count).
--check runs the exported and the eager model on that image and compares their detections as
sets (class, IoU, score; near-tied scores may swap places).
"""
import os
import sys
import warnings

import torch
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..deploy.export import (
    EXPORT_FORMATS, EXPORT_METHODS, build_model_for_export, check_export_request, export_model,
)  # fmt: skip
from ..deploy.exported import LOAD_INSTRUCTIONS, check_exported
from ..deploy.sample_image import channel_description, sample_image
from .arguments import ToolParser, one_line_errors

PROG = "export_model"


def get_parser():
    """The export's command-line arguments."""
    parser = ToolParser(prog=PROG, description="Export RetinaNetPlugin to TorchScript or ONNX")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript", help="output format")
    parser.add_argument("--export-method", choices=EXPORT_METHODS, default="tracing", help="how to export")
    parser.add_argument("--output", required=True, metavar="DIR", help="directory for model.ts / model.onnx / network.onnx")
    parser.add_argument(
        "--sample-image",
        metavar="FILE",
        help="image to trace and check on (default: a generated image of the config's test size)",
    )
    parser.add_argument(
        "--check", action="store_true", help="run the exported and the eager model on the sample image and compare"
    )
    return parser


def main(argv=None):
    """Parse the arguments, export the model, print how to load it and, with --check, the differences."""
    args = get_parser().parse_args(argv)
    # torch warns on every export that torch.jit and the TorchScript-based ONNX exporter are
    # deprecated; they are what this export uses.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    setup_logger(name="fvcore")
    setup_logger(name="retina_plugin")
    logger = setup_logger(name="export")
    # Tracing warns about every assert in Detectron2's structures that it records as constant;
    # that the graph still generalizes is what tests/deploy/test_export.py checks.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    # The ONNX exporter's caveat for negative indices: the graph indexes with nonzero / topk output.
    warnings.filterwarnings("ignore", message="Exporting aten::index operator")
    with one_line_errors(PROG):
        check_export_request(args.format, args.export_method)
        cfg = load_config(args.config_file, args.opts)
        image = sample_image(cfg, args.sample_image)
        model = build_model_for_export(cfg)
        path = export_model(model, image, args.output, args.format, args.export_method)
    logger.info(f"traced on a {tuple(image.shape)} image; wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    load = LOAD_INSTRUCTIONS[args.format].format(
        path=path, fmt=channel_description(cfg), channels=image.shape[0], config=args.config_file
    )
    print(f"Load it with:\n{load}")
    if args.check:
        ok, line = check_exported(path, model, image)
        print(line)
        if not ok:
            sys.exit(1)
