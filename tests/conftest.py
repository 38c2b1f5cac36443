"""Shared helpers: a small CPU config (ResNet-18, 3 classes) and a synthetic training batch."""
from pathlib import Path

import pytest
import torch
from detectron2.structures import Boxes, Instances

import retina_plugin  # noqa: F401  (registers the plugin's components)
from retina_plugin import load_config
from retina_plugin.data import generate_shapes_dataset
from tiny_detector import train_tiny_detector
from tool_runs import BASE_CONFIG, SMALL_MODEL_OPTS

REPO = Path(__file__).resolve().parents[1]


def _small_cfg():
    return load_config(str(REPO / BASE_CONFIG), SMALL_MODEL_OPTS)


def _make_batch(counts=(3, 1, 0), sizes=((160, 224), (128, 200), (150, 160)), num_classes=3, seed=1):
    """One input dict per entry of `counts` (that many random ground-truth boxes), images 0..255."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for n, (h, w) in zip(counts, sizes):
        image = torch.rand(3, h, w, generator=g) * 255
        inst = Instances((h, w))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        wh = torch.rand(n, 2, generator=g) * 60 + 10
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
        batch.append({"image": image, "instances": inst})
    return batch


@pytest.fixture
def single_thread():
    """
    Run a test on one intra-op thread. The test machines are small and shared: with two OpenMP
    threads competing with other processes for two cores, the convolutions run ~10x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def small_cfg():
    """A fresh RetinaNetPlugin config: ResNet-18 (RES2 64 channels), 3 classes, CPU."""
    return _small_cfg()


@pytest.fixture
def make_batch():
    """make_batch(counts, sizes, num_classes, seed) -> list of model input dicts with instances."""
    return _make_batch


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A generated shapes dataset (16 train / 4 val images of 128 px) for training runs."""
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(root, num_train=16, num_val=4, image_size=128, seed=3)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The tiny RetinaNetPlugin of tiny_detector.py, trained once per session (~35 s)."""
    return train_tiny_detector(tmp_path_factory.mktemp("tiny_detector"))
