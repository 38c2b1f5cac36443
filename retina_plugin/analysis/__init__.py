"""
Dataset analyses for RetinaNetPlugin configs. `anchor_coverage`: do a config's anchors cover
a dataset's boxes, and which anchor setting would cover them better?
"""
from .anchor_coverage import *  # noqa: F401,F403  (its __all__)
from .anchor_coverage import __all__  # noqa: F401
