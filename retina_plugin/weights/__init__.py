"""
Weights in and out of the model: the safe, atomic checkpointer (`checkpoint`) and 3-channel
weights adapted to a stem of another number of bands (`band_weights`).
"""
from .checkpoint import RetinaCheckpointer, UnsafeCheckpointError

__all__ = ["RetinaCheckpointer", "UnsafeCheckpointError"]
