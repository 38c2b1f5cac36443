"""
Training: Detectron2's DefaultTrainer with COCO evaluation, multi-process CPU training and exact
resumption (`trainer`), the LazyConfig counterparts (`lazy_config`: loading and checking a
Python config; `lazy_trainer`: its training loop and evaluation), the stop of a run whose loss
goes inf or NaN (`non_finite`), the metrics plot (`plot`), the throughput of an evaluation
(`throughput`), and the heartbeat that names a lost rank of a multi-machine job (`watchdog`).
"""
from .trainer import Trainer

__all__ = ["Trainer"]
