"""
Fixtures of the analysis tests: the datasets of anchor_cases.py, written and registered once,
the real model they are checked against, and one analysis several tests read. Every test runs
on one thread (`single_thread` of tests/conftest.py); the session fixtures, made before it
applies, set one thread themselves.
"""
import contextlib

import pytest
import torch
from detectron2.modeling import build_model

from anchor_cases import analysis_cfg, write_datasets


@contextlib.contextmanager
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    yield


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    """{"mixed", "exact", "elongated"}: (json path, image dir), registered as analysis_<key>."""
    return write_datasets(str(tmp_path_factory.mktemp("anchor_datasets")))


@pytest.fixture(scope="session")
def model():
    """RetinaNetPlugin of `analysis_cfg()`, in eval mode."""
    with _one_thread():
        return build_model(analysis_cfg()).eval()


@pytest.fixture(scope="session")
def elongated_report(datasets):
    """The analysis of analysis_elongated (thin boxes the default anchors miss) under `analysis_cfg()`."""
    from retina_plugin.analysis.anchors import analyze_anchor_coverage

    with _one_thread():
        return analyze_anchor_coverage(analysis_cfg(), "analysis_elongated")
