"""
Weights in and out of the model: the safe, atomic checkpointer (`checkpoint`), 3-channel
weights adapted to a stem of another number of bands (`band_weights`), and torchvision /
DeepForest RetinaNets converted both ways (`convert`: `source_files` reads them,
`torchvision_keys` renames them, `torchvision_config` is the config that runs them).
"""
from .checkpoint import RetinaCheckpointer, UnsafeCheckpointError

__all__ = ["RetinaCheckpointer", "UnsafeCheckpointError"]
