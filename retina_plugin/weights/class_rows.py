"""
The class-score rows of a checkpoint kept by class name when its model is fine-tuned to other
classes (a COCO model to `car, person, bicycle`, a tree model to `tree, snag`).

The classification subnet's last conv, `head.cls_score`, has A*K output channels, anchor-major
and class-minor: channel a*K + k scores class k at anchor a (Detectron2's `permute_to_N_HWA_K`
reads them as (A, K)). Its weight is (A*K, C, 3, 3) and its bias (A*K,). For every class
the training data shares by name with the checkpoint, the A rows of the checkpoint's class
index are copied to the A rows of the data's class index; every other class keeps the rows
the head was built with (normal(std=0.01) weights, bias -log((1 - pi) / pi) from PRIOR_PROB).

Names match exactly, as Detectron2 compares `thing_classes` (the test dataset must name the
training dataset's classes exactly too): "Tree" is a new class beside a checkpoint's "tree".
Such a near miss (equal but for case and surrounding spaces) is logged as a warning that
names both spellings, so that it is renamed rather than silently trained from scratch.

A checkpoint names its classes when it records "class_names" (every checkpoint the plugin
writes does). A Detectron2 model-zoo `.pkl` records none, but carries the zoo's
`__author__` "Detectron2 Model Zoo"; with 80 classes per anchor it is a COCO detection model,
and its classes are COCO's 80 thing classes in contiguous id order
(`detectron2.data.datasets.builtin_meta.COCO_CATEGORIES`, isthing=1).
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

__all__ = ["CLASS_SCORE_PREFIX", "ClassRows", "checkpoint_class_names", "match_class_rows", "class_score_rows"]

CLASS_SCORE_PREFIX = "head.cls_score."

# What Detectron2's model-zoo .pkl files hold under "__author__" (its checkpointer logs it).
DETECTRON2_ZOO_AUTHOR = "Detectron2 Model Zoo"
COCO_THING_CLASSES = tuple(c["name"] for c in COCO_CATEGORIES if c["isthing"])


def checkpoint_class_names(checkpoint: dict, num_rows: int, num_anchors: int) -> Optional[List[str]]:
    """
    The names of a checkpoint's class ids 0..K-1: its "class_names", or COCO's 80 thing classes
    for a Detectron2 model-zoo file whose class-score layer has 80 * `num_anchors` rows; else None.
    """
    names = checkpoint.get("class_names")
    if names is not None:
        return [str(n) for n in names]
    if checkpoint.get("__author__") == DETECTRON2_ZOO_AUTHOR and num_rows == len(COCO_THING_CLASSES) * num_anchors:
        return list(COCO_THING_CLASSES)
    return None


@dataclass(frozen=True)
class ClassRows:
    """Which classes of a checkpoint (`old`) a model of classes `new` keeps, by name."""

    old: Tuple[str, ...]
    new: Tuple[str, ...]
    kept: Tuple[Tuple[int, int], ...]  # (old index, new index) of each shared name

    @property
    def fresh(self) -> List[int]:
        """The new indices whose rows keep the head's initialisation."""
        kept_new = {n for _, n in self.kept}
        return [i for i in range(len(self.new)) if i not in kept_new]

    @property
    def unused(self) -> List[int]:
        """The old indices no class of the model takes."""
        kept_old = {o for o, _ in self.kept}
        return [i for i in range(len(self.old)) if i not in kept_old]

    def near_misses(self) -> List[Tuple[str, str]]:
        """(new name, old name) pairs of a fresh and an unused class equal but for case and surrounding spaces."""
        unused = {_loose(self.old[i]): self.old[i] for i in self.unused}
        return [(self.new[i], unused[_loose(self.new[i])]) for i in self.fresh if _loose(self.new[i]) in unused]

    def describe(self, source: str) -> str:
        """One line: the kept classes (old -> new index), the fresh ones, the unused ones."""
        kept = ", ".join(f"{self.new[n]} ({o} -> {n})" for o, n in self.kept) or "none"
        fresh = ", ".join(f"{self.new[i]} ({i})" for i in self.fresh) or "none"
        unused = ", ".join(self.old[i] for i in self.unused) or "none"
        return (
            f"Class-score rows by class name, from {source} ({len(self.old)} classes) to the training data's "
            f"{len(self.new)}: kept {kept}; new, initialised from PRIOR_PROB: {fresh}; not in the training data: {unused}"
        )


def _loose(name: str) -> str:
    return name.strip().casefold()


def match_class_rows(old: Sequence[str], new: Sequence[str]) -> ClassRows:
    """
    Pair the classes of `old` and `new` of the same name. A name that occurs more than once on
    either side is ambiguous, and pairs with nothing.
    """
    old, new = tuple(old), tuple(new)
    old_index = {name: i for i, name in enumerate(old) if old.count(name) == 1}
    kept = tuple((old_index[name], i) for i, name in enumerate(new) if name in old_index and new.count(name) == 1)
    return ClassRows(old=old, new=new, kept=kept)


def class_score_rows(
    checkpoint_tensor: torch.Tensor, model_tensor: torch.Tensor, rows: ClassRows, num_anchors: int
) -> torch.Tensor:
    """
    Args:
        checkpoint_tensor: the checkpoint's cls_score weight (A*K_old, C, kh, kw) or bias (A*K_old,).
        model_tensor: the model's, (A*K_new, ...) of the same trailing shape.
        rows: the classes paired by name.
        num_anchors: A.
    Returns:
        A copy of `model_tensor` (its dtype and device) whose rows a*K_new + n, for every kept
        (o, n), are the checkpoint's rows a*K_old + o.
    """
    old_k, new_k = len(rows.old), len(rows.new)
    out = model_tensor.detach().clone(memory_format=torch.contiguous_format)
    old = checkpoint_tensor.reshape(num_anchors, old_k, *checkpoint_tensor.shape[1:])
    view = out.view(num_anchors, new_k, *out.shape[1:])
    for o, n in rows.kept:
        view[:, n] = old[:, o].to(out)
    return out
