"""
Weights in and out of the model: the safe, atomic checkpointer (`checkpoint`), 3-channel
weights adapted to a stem of another number of bands (`band_weights`) and the class-score rows
kept by class name when fine-tuning to other classes (`class_rows`).
"""
from .checkpoint import RetinaCheckpointer, UnsafeCheckpointError

__all__ = ["RetinaCheckpointer", "UnsafeCheckpointError"]
