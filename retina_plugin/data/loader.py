"""
Data loaders for training and evaluation on Detectron2 dataset dicts, built so that bad input
is reported before training starts and a resumed run sees exactly the batches an uninterrupted
run would have seen.

- `load_dataset_dicts`: the registered datasets' dicts, each tagged with its dataset name,
  boxes clipped or dropped (`sanitize_dataset_dicts`), images that are missing, unreadable,
  of another size than the json says or resized to 0 px reported at once, naming the file
  (`image_sizes.image_problems`; dropped and counted in one line with
  `DATALOADER.SKIP_UNREADABLE_IMAGES`). The training loader checks the evaluation datasets too.
- `ResumableTrainLoader`: batches as Detectron2's `build_detection_train_loader` forms them
  (its samplers, grouping by aspect ratio w > h / w <= h), but the batches are formed from
  the index stream in the main process, each sample's augmentation is seeded by its position
  in the stream, and `start_iter` skips the batches a resumed run has already trained on. The
  batches are therefore a function of (seed, iteration) only — independent of resuming and of
  the number of loader workers.
"""
import logging
import os
import random
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch.utils.data as torchdata
from detectron2.data import DatasetCatalog
from detectron2.data.build import (
    _train_loader_from_config,
    filter_images_with_only_crowd_annotations,
    print_instances_class_histogram,
    trivial_batch_collator,
)
from detectron2.data.catalog import MetadataCatalog
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .boxes import sanitize_dataset_dicts
from .coco_json import DatasetError
from .image_sizes import Resize, image_problems, summarize_problems
from .mapper import ImageReadError

__all__ = ["load_dataset_dicts", "check_evaluation_images", "ResumableTrainLoader", "build_resumable_train_loader"]

logger = logging.getLogger(__name__)


def _checked_images(name: str, dicts: List[dict], resize: Optional[Resize], skip: bool) -> List[dict]:
    """`dicts` without the images of `image_problems`, counted in one log line, or an error naming the first."""
    problems = image_problems(dicts, json_file=MetadataCatalog.get(name).get("json_file", "the dataset's dicts"), resize=resize)
    if not problems:
        return dicts
    summary = f"dataset {name!r}: {summarize_problems(problems, len(dicts))}"
    if not skip:
        error = ImageReadError if problems[0].kind in ("missing", "unreadable") else DatasetError
        raise error(summary + " (set DATALOADER.SKIP_UNREADABLE_IMAGES True to train without them)")
    logger.warning(summary + "; skipped")
    bad = {p.file_name for p in problems}
    return [d for d in dicts if d["file_name"] not in bad]


def load_dataset_dicts(names: Sequence[str], *, skip_bad_images: bool = False, filter_empty: bool = False,
                       resize: Optional[Resize] = None) -> List[dict]:
    """
    Args:
        names: registered dataset names.
        skip_bad_images: drop the images `image_sizes.image_problems` finds (missing,
            unreadable header, size not the json's, resized to 0 px), counted in one log line
            per dataset, instead of raising ImageReadError / DatasetError naming the first.
        filter_empty: drop images without (non-crowd) annotations, like Detectron2's
            DATALOADER.FILTER_EMPTY_ANNOTATIONS; done after bad boxes are dropped.
        resize: (INPUT.MIN_SIZE_*, INPUT.MAX_SIZE_*) of the loader, for the 0 px check.
    Returns:
        the concatenated dataset dicts, each with "dataset_name".
    """
    if isinstance(names, str):
        names = [names]
    all_dicts = []
    for name in names:
        if name not in DatasetCatalog.list():
            raise DatasetError(f"dataset {name!r} is not registered; registered: {', '.join(sorted(DatasetCatalog.list()))}")
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise DatasetError(f"dataset {name!r} is empty")
        for d in dicts:
            d["dataset_name"] = name
        dicts = _checked_images(name, dicts, resize, skip_bad_images)
        sanitize_dataset_dicts(dicts, name)
        all_dicts.extend(dicts)
    if filter_empty:
        all_dicts = filter_images_with_only_crowd_annotations(all_dicts)
    if not all_dicts:
        raise DatasetError(f"datasets {list(names)}: no images left to train on")
    if "annotations" in all_dicts[0]:
        try:
            print_instances_class_histogram(all_dicts, MetadataCatalog.get(names[0]).thing_classes)
        except AttributeError:  # no class names registered
            pass
    return all_dicts


def check_evaluation_images(cfg):
    """
    The images of cfg.DATASETS.TEST, checked as `load_dataset_dicts` does with the test resize
    (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST): evaluation always stops at a bad image, so a run
    learns of it before training rather than after.
    """
    for name in cfg.DATASETS.TEST:
        # An unregistered dataset or a missing json is `catalog.check_dataset_files`'s to report.
        if name not in DatasetCatalog.list():
            continue
        json_file = MetadataCatalog.get(name).get("json_file", None)
        if json_file is None or os.path.isfile(json_file):
            _checked_images(name, DatasetCatalog.get(name), ((cfg.INPUT.MIN_SIZE_TEST,), cfg.INPUT.MAX_SIZE_TEST), skip=False)


class _SeededMappedSamples(torchdata.Dataset):
    """dataset[(position, index)] -> mapper(dicts[index]) with numpy/random seeded by position."""

    def __init__(self, dicts: List[dict], mapper, seed: int):
        self.dicts = dicts
        self.mapper = mapper
        self.seed = seed

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, key: Tuple[int, int]):
        position, index = key
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            sample_seed = (self.seed * 1_000_003 + position) % 2**32
            np.random.seed(sample_seed)
            random.seed(sample_seed)
            # An unreadable image (mapper returns None when told to skip it) is replaced by
            # the next readable one: deterministic, unlike Detectron2's random fallback.
            for offset in range(len(self.dicts)):
                mapped = self.mapper(self.dicts[(index + offset) % len(self.dicts)])
                if mapped is not None:
                    return mapped
            raise ImageReadError(f"none of the {len(self.dicts)} training images could be read")
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class _GroupedBatches:
    """Lists of (position, index): a sampler's index stream grouped into batches."""

    def __init__(self, sampler, dicts: List[dict], batch_size: int, aspect_ratio_grouping: bool, start_iter: int):
        self.sampler = sampler
        self.landscape = [d.get("width", 1) > d.get("height", 1) for d in dicts]
        self.batch_size = batch_size
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.start_iter = start_iter

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        buckets = ([], [])
        num_batches = 0
        for position, index in enumerate(self.sampler):
            bucket = buckets[int(self.aspect_ratio_grouping and self.landscape[index])]
            bucket.append((position, index))
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                num_batches += 1
                if num_batches > self.start_iter:
                    yield batch


class ResumableTrainLoader:
    """
    An infinite iterable of training batches (lists of mapped dicts, this process's share of
    the total batch). Set `start_iter` before iterating to continue a run at that iteration.
    """

    def __init__(self, dicts: List[dict], mapper, sampler, *, batch_size: int, aspect_ratio_grouping: bool, num_workers: int, seed: int):
        self.dataset = dicts
        self.mapper = mapper
        self.sampler = sampler
        self.batch_size = batch_size
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.num_workers = num_workers
        self.seed = seed
        self.start_iter = 0

    def __iter__(self):
        batches = _GroupedBatches(self.sampler, self.dataset, self.batch_size, self.aspect_ratio_grouping, self.start_iter)
        loader = torchdata.DataLoader(
            _SeededMappedSamples(self.dataset, self.mapper, self.seed),
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=trivial_batch_collator,
        )
        return iter(loader)


def build_resumable_train_loader(cfg, mapper) -> ResumableTrainLoader:
    """
    The training loader for cfg.DATASETS.TRAIN: Detectron2's sampler (cfg.DATALOADER.SAMPLER_TRAIN;
    TrainingSampler seeded by cfg.SEED when it is >= 0), batch and grouping settings; the
    images of the training and evaluation datasets checked first.
    """
    check_evaluation_images(cfg)
    dicts = load_dataset_dicts(
        cfg.DATASETS.TRAIN,
        skip_bad_images=cfg.DATALOADER.SKIP_UNREADABLE_IMAGES,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        resize=(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN),
    )
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
        sampler = TrainingSampler(len(dicts), seed=seed)
    else:
        sampler = _train_loader_from_config(cfg, mapper, dataset=dicts)["sampler"]
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH = {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the {world_size} processes")
    return ResumableTrainLoader(
        dicts,
        mapper,
        sampler,
        batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=seed + comm.get_rank() * 7919,
    )
