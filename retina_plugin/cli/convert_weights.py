"""
tools/convert_weights.py: torchvision and DeepForest RetinaNets into RetinaNetPlugin (a checkpoint
with their class names + the config that runs them as their source does), and back
(docs/weights.md).

    python tools/convert_weights.py --from torchvision --input retinanet_resnet50_fpn_coco.pth --output out/
    python tools/convert_weights.py --from deepforest --input deepforest-tree/ --output out/ \
        MODEL.RETINANET.SCORE_THRESH_TEST 0.3
    python tools/convert_weights.py --to torchvision --config-file out/config.yaml \
        --input out/model_final.pth --output retinanet.pth
    python tools/convert_weights.py --to deepforest --config-file out/config.yaml \
        --input out/model_final.pth --output deepforest-tree-finetuned/
"""
import os

from ..weights.convert import CHECKPOINT_NAME, convert_to_plugin, convert_to_torchvision
from ..weights.torchvision_config import SOURCES
from .arguments import ToolParser, one_line_errors

PROG = "convert_weights"


def get_parser():
    parser = ToolParser(
        prog=PROG, description="RetinaNet weights: torchvision / DeepForest -> RetinaNetPlugin, and back",
        opts_example="MODEL.RETINANET.SCORE_THRESH_TEST 0.3",
    )  # fmt: skip
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source", choices=SOURCES, help="convert this source's weights into the plugin's")
    direction.add_argument("--to", dest="target", choices=("torchvision", "deepforest"), help="convert a plugin checkpoint back to this")
    parser.add_argument(
        "--input", required=True,
        help="--from: a .pth / .pt / .ckpt / .safetensors file, or DeepForest's folder (model.safetensors + config.json); "
        "--to: the plugin checkpoint (model_final.pth)",
    )  # fmt: skip
    parser.add_argument(
        "--output", required=True,
        help="--from: a folder for model_final.pth + config.yaml; --to torchvision: the .pth; --to deepforest: a folder",
    )  # fmt: skip
    parser.add_argument("--config-file", metavar="FILE", help="--to: the plugin config of --input (as --from wrote it)")
    parser.add_argument("--class-names", metavar="A,B,...", help="--from: class names of ids 0..K-1, when the source has none")
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.target and not args.config_file:
        parser.error("--to needs --config-file, the plugin config of --input")
    if args.source and args.config_file:
        parser.error("--config-file is for --to; --from writes the config")
    with one_line_errors(PROG):
        if args.source:
            names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
            config = convert_to_plugin(args.source, args.input, args.output, names, args.opts)
            weights = os.path.join(os.path.dirname(config), CHECKPOINT_NAME + ".pth")
            print(f"Wrote {weights} and {config}")
            return
        written = convert_to_torchvision(args.config_file, args.input, args.output, args.target, args.opts)
        print(f"Wrote {written}")


if __name__ == "__main__":
    main()
