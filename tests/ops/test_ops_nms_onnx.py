"""
The ONNX form of the rotated NMS (retina_plugin/ops/rotated_nms_onnx.py) keeps the boxes that
`_batched_nms_rotated` keeps, in the same order, on the hard sets of test_ops_nms.py (clusters
with equal scores in 3 classes, duplicates, the 400-box chain, the strict threshold, no boxes):
run eagerly, and exported once to ONNX (the threshold an input) and run in onnxruntime. Both
run the exact IoU in chunks of CHUNK pairs, small enough that most sets take many chunks (the
ONNX Loop runs more than once).
"""
import functools

import numpy as np
import pytest
import torch

from retina_plugin.deploy.export import ONNX_OPSET
from retina_plugin.ops.rotated_nms import _batched_nms_rotated
from retina_plugin.ops.rotated_nms_onnx import batched_nms_rotated_onnx
from test_ops_nms import _clustered


def _chain(n=400):
    boxes = torch.tensor([[10.0 * i, 50.0, 16.0, 6.0, 0.0] for i in range(n)])
    return boxes, torch.linspace(1, 0.1, n), torch.zeros(n, dtype=torch.long)


def _duplicates():
    box = torch.tensor([[40.0, 30.0, 20.0, 8.0, 33.0]])
    boxes = torch.cat([box, box + torch.tensor([200.0, 0, 0, 0, 0]), box, box])
    return boxes, torch.tensor([0.5, 0.5, 0.5, 0.9]), torch.tensor([1, 1, 2, 1])


def _third_apart():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0], [5.0, 0.0, 10.0, 10.0, 0.0]])  # IoU 1/3
    return boxes, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long)


def _one_class(boxes, scores, classes, iou):
    return boxes, scores, torch.zeros_like(classes)


HARD_SETS = {
    **{f"clusters{seed}-one-class-{t}": (lambda s=seed: _one_class(*_clustered(200, s)), t) for seed in (0, 1) for t in (0.1, 0.3, 0.5, 0.7)},
    **{f"clusters2-3-classes-{t}": (lambda: _clustered(200, 2)[:3], t) for t in (0.2, 0.5)},
    "duplicates": (_duplicates, 0.5),
    "chain-400": (_chain, 0.2),
    "strict-0.34": (_third_apart, 0.34),
    "strict-0.33": (_third_apart, 0.33),
    "empty": (lambda: (torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.long)), 0.5),
}  # fmt: skip


CHUNK = 97


class _NMSModule(torch.nn.Module):
    chunk: torch.jit.Final[int] = CHUNK

    def forward(self, boxes, scores, classes, threshold):
        return batched_nms_rotated_onnx(boxes, scores, classes, float(threshold), self.chunk)


@functools.lru_cache(maxsize=1)
def _onnx_session(directory):
    import onnxruntime

    path = f"{directory}/nms.onnx"
    n = {0: "n"}
    torch.onnx.export(
        torch.jit.script(_NMSModule()), (*_chain(8), torch.tensor(0.5, dtype=torch.float64)), path, dynamo=False, opset_version=ONNX_OPSET,
        input_names=["boxes", "scores", "classes", "threshold"], output_names=["keep"],
        dynamic_axes={"boxes": n, "scores": n, "classes": n, "keep": {0: "k"}},
    )  # fmt: skip
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return _onnx_session(str(tmp_path_factory.mktemp("nms_onnx")))


@pytest.mark.parametrize("name", list(HARD_SETS))
def test_onnx_nms_keeps_what_the_nms_keeps(session, name):
    make, threshold = HARD_SETS[name]
    boxes, scores, classes = make()
    expected = _batched_nms_rotated(boxes, scores, classes, threshold)
    if name.startswith("clusters"):
        assert 5 < expected.numel() < boxes.shape[0]
    assert torch.equal(batched_nms_rotated_onnx(boxes, scores, classes, threshold), expected)
    assert torch.equal(batched_nms_rotated_onnx(boxes, scores, classes, threshold, CHUNK), expected)
    feeds = {"boxes": boxes.numpy(), "scores": scores.numpy(), "classes": classes.numpy(), "threshold": np.array(threshold)}
    kept = session.run(None, feeds)[0]
    assert kept.dtype == np.int64 and kept.tolist() == expected.tolist()
