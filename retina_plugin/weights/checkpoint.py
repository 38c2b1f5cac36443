"""
`RetinaCheckpointer`: Detectron2's `DetectionCheckpointer` made safe for untrusted files and
for runs that get killed.

- `.pth` files, and pycls' `.pyth`, are read with `torch.load(weights_only=True)`: tensors,
  numbers, strings and containers only, so a file cannot run code when it is loaded. The
  argument is explicit, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (which only changes torch.load's
  default) cannot turn it off.
- `.pkl` files (Detectron2's model zoo and ImageNet-pretrained backbones) are plain pickles,
  which can run any code; they are read with an unpickler that only builds dicts, lists and
  numpy arrays and refuses anything else, naming the file and what it asked for.
- A checkpoint is written to a temporary file in the same folder and renamed over its final
  name (atomic on POSIX), and so is `last_checkpoint`: a run killed mid-write leaves the
  previous good checkpoint in place and tagged. The temporary's name holds the writer's pid
  (`model_0000019.pth.<pid>.<random>.tmp`); a checkpointer with a save_dir removes the
  temporaries there whose writer is no longer running.
- Loading weights whose classes are named (the checkpoint's "class_names", or COCO's for a
  Detectron2 model-zoo file) into a model given `class_names` keeps the class-score rows of the
  classes both name alike, maps them to the model's class ids and says which (`class_rows`).
  Otherwise, weights trained with another NUM_CLASSES load all but the class-score layer, which
  says so.
- Loading 3-channel (RGB) weights into a model of another number of input channels
  (len(MODEL.PIXEL_MEAN)) adapts the stem's filters (`band_weights`) and says so.
"""
import io
import logging
import os
import pickle
import re
import tempfile
import time
from typing import Optional, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from ..data.output_files import process_is_running
from ..errors import UserError
from .band_weights import adapt_checkpoint_stem
from .class_rows import CLASS_SCORE_PREFIX, checkpoint_class_names, class_score_rows, match_class_rows

logger = logging.getLogger(__name__)

# The globals a Detectron2 / Caffe2 model-zoo .pkl needs: dicts of numpy arrays.
_PKL_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}

# `_atomic_write`'s temporaries: "<final name>.<pid>.<random>.tmp"; without the pid, those of
# writers that did not record it.
_TEMPORARY = re.compile(r"^(?:.+\.pth|last_checkpoint)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]+\.tmp$")
# Temporaries without a pid are removed only when last written before this process started.
_PROCESS_START = time.time()


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """A checkpoint file asked to build an object other than tensors, arrays and containers."""


class _WeightsOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, filename: str):
        super().__init__(file, encoding="latin1")
        self._filename = filename

    def find_class(self, module, name):
        if (module, name) in _PKL_ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self._filename}: refusing to load {module}.{name}; a weights file only holds "
            "dicts of arrays. If you trust this file and its source, convert it to a .pth "
            "state_dict in a separate, sandboxed process."
        )


def load_pkl_weights(filename: str):
    """Read a `.pkl` weights file, refusing every pickled global but numpy arrays and dicts."""
    with PathManager.open(filename, "rb") as f:
        return _WeightsOnlyUnpickler(io.BytesIO(f.read()), filename).load()


class RetinaCheckpointer(DetectionCheckpointer):
    """
    DetectionCheckpointer with weights-only loading, atomic saving, a NUM_CLASSES note and
    3-channel stem weights adapted to the model's input channels. `class_names` are the model's
    classes (the trainers pass the first training dataset's thing_classes): every checkpoint it
    writes records them ("class_names": the names of class ids 0..K-1), so a model labels its
    detections wherever it goes, and loading a checkpoint of named classes keeps the
    class-score rows of the classes both name alike (`class_rows`).
    """

    def __init__(self, model, save_dir="", *, class_names: Optional[Sequence[str]] = None, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.class_names = list(class_names) if class_names else None
        if save_dir and self.save_to_disk:
            remove_stale_temporaries(save_dir, self.logger)

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            data = load_pkl_weights(filename)
            if "model" in data and "__author__" in data:
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            if "blobs" in data:
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):
            # Detectron2 reads pycls' .pyth with a bare torch.load, which the environment can make unsafe.
            with PathManager.open(filename, "rb") as f:
                data = self._torch_load(f, filename)
            if not isinstance(data, dict) or "model_state" not in data:
                raise UnsafeCheckpointError(f"{filename}: a .pyth (pycls) checkpoint holds 'model_state'; this one does not")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return super()._load_file(filename)

    def _torch_load(self, f, filename: Optional[str] = None):
        try:
            return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"{filename or f}: not loadable with torch.load(weights_only=True): {str(e).splitlines()[0]}"
            ) from None

    def _load_model(self, checkpoint):
        # Before the name matching and the shape check, both of which drop a mismatched stem.
        adapted = adapt_checkpoint_stem(checkpoint, self.model.state_dict())
        if adapted:
            self.logger.info(adapted)
        self._keep_class_rows_by_name(checkpoint)
        incompatible = super()._load_model(checkpoint)
        for key, shape_checkpoint, shape_model in incompatible.incorrect_shapes:
            if key == CLASS_SCORE_PREFIX + "bias":
                self.logger.warning(
                    f"NUM_CLASSES differs: the checkpoint's class-score layer has "
                    f"{shape_checkpoint[0] // self._anchors_per_location()} classes, the model "
                    f"{shape_model[0] // self._anchors_per_location()}. Loaded the backbone, FPN "
                    f"and both subnets' trunks; {CLASS_SCORE_PREFIX}{{weight,bias}} keep their "
                    "initialisation (bias from PRIOR_PROB)."
                )
        return incompatible

    def _keep_class_rows_by_name(self, checkpoint) -> None:
        """Turn the checkpoint's class-score layer into the model's classes by name (`class_rows`)."""
        weights, model_state = checkpoint["model"], self.model.state_dict()
        keys = {key: next((k for k in (key, "module." + key) if k in weights), None)
                for key in (CLASS_SCORE_PREFIX + "weight", CLASS_SCORE_PREFIX + "bias")}  # fmt: skip
        if self.class_names is None or None in keys.values() or not all(k in model_state for k in keys):
            return
        anchors = self._anchors_per_location()
        old_rows = len(weights[keys[CLASS_SCORE_PREFIX + "bias"]])
        old_names = checkpoint_class_names(checkpoint, old_rows, anchors)
        if old_names is None or old_names == self.class_names:
            return
        new_rows = len(model_state[CLASS_SCORE_PREFIX + "bias"])
        if old_rows != len(old_names) * anchors or new_rows != len(self.class_names) * anchors:
            return  # other anchors per location: the shape check drops the layer, and says so
        rows = match_class_rows(old_names, self.class_names)
        for key, checkpoint_key in keys.items():
            weights[checkpoint_key] = class_score_rows(torch.as_tensor(weights[checkpoint_key]), model_state[key], rows, anchors)
        self.logger.info(rows.describe("the checkpoint" if "class_names" in checkpoint else "a Detectron2 model-zoo COCO model"))
        for new, old in rows.near_misses():
            self.logger.warning(
                f"Class {new!r} of the training data starts from scratch: the checkpoint has {old!r}, and class names "
                f"match exactly; name the category {old!r} to keep its class-score rows"
            )

    def _anchors_per_location(self) -> int:
        model = self.model.module if hasattr(self.model, "module") else self.model
        return model.head.num_anchors

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        if self.class_names:
            data["class_names"] = self.class_names
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(save_file))
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(save_file, lambda f: f.write(last_filename_basename.encode()))


def _atomic_write(path: str, write) -> None:
    """Write a file through `write(binary_file)` into a temporary file, then rename it to `path`."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temporaries(folder: str, logger: logging.Logger) -> None:
    """Remove the checkpoint temporaries in `folder` of writers that were killed (see `_TEMPORARY`)."""
    try:
        names = os.listdir(folder)
    except OSError:  # not there yet: nothing was written to it
        return
    for name in names:
        match = _TEMPORARY.match(name)
        path = os.path.join(folder, name)
        if match is None or not _is_stale(path, match.group("pid")):
            continue
        try:
            os.remove(path)
        except OSError:  # removed by another process meanwhile
            continue
        logger.info(f"Removed {path}, left by a checkpoint write that did not finish")


def _is_stale(path: str, pid: Optional[str]) -> bool:
    if pid is None:
        try:
            return os.path.getmtime(path) < _PROCESS_START
        except OSError:
            return False
    return not process_is_running(int(pid))
