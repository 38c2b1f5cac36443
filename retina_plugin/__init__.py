"""
retina_plugin: RetinaNet (Lin et al., "Focal Loss for Dense Object Detection") for Detectron2.

Importing the package registers its components in Detectron2's registries:
  META_ARCH_REGISTRY         RetinaNetPlugin
  BACKBONE_REGISTRY          build_retina_plugin_resnet_fpn_backbone
  ANCHOR_GENERATOR_REGISTRY  RetinaAnchorGenerator, TorchvisionAnchorGenerator
  RETINA_HEAD_REGISTRY       FocalLossHead, TorchvisionFocalLossHead
  RETINA_POSTPROCESS_REGISTRY DecodeAndNMS, TorchvisionDecodeAndNMS
"""
try:
    import detectron2  # noqa: F401
except ImportError:
    raise ImportError(
        "retina_plugin needs Detectron2, which is not on PyPI under its own name. Install it "
        "from source as its INSTALL.md says:\n"
        "    pip install 'git+https://github.com/facebookresearch/detectron2.git'\n"
        "or, without network access to GitHub, run this project's setup, which installs a pinned "
        "wheel of Detectron2's Python sources (sal-detectron2 0.7.2, sha256-checked):\n"
        "    make setup        (or: bash scripts/setup_venv.sh)"
    ) from None

from .modeling.anchor_generator import RetinaAnchorGenerator
from .modeling.backbone import build_retina_plugin_resnet_fpn_backbone
from .config import ConfigError, add_retina_plugin_config, check_retina_plugin_config, get_retina_plugin_cfg, load_config
from .modeling.focal_loss import sigmoid_focal_loss
from .modeling.head import RETINA_HEAD_REGISTRY, FocalLossHead
from .modeling.meta_arch import RetinaNetPlugin
from .modeling.postprocess import RETINA_POSTPROCESS_REGISTRY, DecodeAndNMS

__all__ = [
    "RetinaAnchorGenerator",
    "build_retina_plugin_resnet_fpn_backbone",
    "add_retina_plugin_config",
    "check_retina_plugin_config",
    "get_retina_plugin_cfg",
    "load_config",
    "ConfigError",
    "sigmoid_focal_loss",
    "RETINA_HEAD_REGISTRY",
    "FocalLossHead",
    "RetinaNetPlugin",
    "RETINA_POSTPROCESS_REGISTRY",
    "DecodeAndNMS",
]
