"""
Anchor matching in chunks of anchors: the same matches and labels as Detectron2's `Matcher` on
the whole `pairwise_iou` matrix (ties, low-quality matches, a box no anchor reaches), and a
peak memory that grows with boxes + anchors, not their product.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou

from retina_plugin.modeling.matching import label_anchors, match_anchors

_SIZES = [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in (32, 64, 128, 256, 512)]


def _anchors(height, width):
    """RetinaNet's anchors (P3-P7, 9 per location) of an image, (R, 4)."""
    generator = DefaultAnchorGenerator(sizes=_SIZES, aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16, 32, 64, 128])
    features = [torch.zeros(1, 1, -(-height // s), -(-width // s)) for s in (8, 16, 32, 64, 128)]
    return torch.cat([b.tensor for b in generator(features)])


def _boxes_with_ties(anchors, seed, n=60):
    """Random boxes, plus repeated boxes (ties between boxes), anchors themselves (IoU 1) and tiny boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 180
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 90], 1)
    picked = anchors[torch.randint(0, len(anchors), (6,), generator=g)]
    tiny = torch.cat([xy[:5], xy[:5] + 0.5], 1)  # best IoU far below the thresholds: low-quality matches
    return torch.cat([boxes, boxes[:7], picked, picked[:2], tiny])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("low_quality", [True, False])
def test_chunked_matching_equals_the_matcher_on_the_whole_matrix(seed, low_quality):
    anchors = Boxes(_anchors(200, 260))
    gt = Boxes(_boxes_with_ties(anchors.tensor, seed))
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=low_quality)
    expected_matches, expected_labels = matcher(pairwise_iou(gt, anchors))
    for pairs_per_chunk in (len(gt) * 37, len(gt) * 400, len(gt) * 3000):  # chunks splitting locations
        matches, labels = match_anchors(gt, anchors, matcher, pairs_per_chunk=pairs_per_chunk)
        assert torch.equal(labels, expected_labels), pairs_per_chunk
        assert torch.equal(matches, expected_matches), pairs_per_chunk
    assert (expected_labels == -1).any() and (expected_labels == 1).sum() > 10  # every label occurs


def test_a_box_no_anchor_reaches_labels_every_anchor_it_misses_as_the_matcher_does():
    anchors = Boxes(_anchors(64, 64)[:300])  # P3's anchors of the top rows only
    gt = Boxes(torch.tensor([[10.0, 10, 40, 30], [500, 500, 520, 530], [12, 8, 30, 35]]))
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    expected_matches, expected_labels = matcher(pairwise_iou(gt, anchors))
    matches, labels = match_anchors(gt, anchors, matcher, pairs_per_chunk=3 * 20)
    assert torch.equal(labels, expected_labels) and torch.equal(matches, expected_matches)
    assert (labels == 1).all()  # the Matcher's rule: the far box's best IoU, 0, ties with every anchor


def test_label_anchors_chunks_a_crowded_image_and_keeps_the_labels():
    """400 boxes x 12,276 anchors is more than one chunk of PAIRS_PER_CHUNK pairs."""
    anchors = _anchors(256, 256)
    inst = Instances((256, 256), gt_boxes=Boxes(_boxes_with_ties(anchors, seed=9, n=380)))
    inst.gt_classes = torch.arange(len(inst)) % 3
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    labels, matched = label_anchors(anchors, [inst], matcher, num_classes=3)
    clipped = inst.gt_boxes.tensor.clamp(0, 256)
    matches, match_labels = matcher(pairwise_iou(Boxes(clipped), Boxes(anchors)))
    expected = torch.where(match_labels == 1, inst.gt_classes[matches], torch.where(match_labels == 0, 3, -1))
    assert torch.equal(labels[0], expected)
    assert torch.equal(matched[0], clipped[matches])


_PEAK_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_matching_chunks import _anchors
    from detectron2.modeling.matcher import Matcher
    from detectron2.structures import Boxes, Instances
    from retina_plugin.modeling.matching import label_anchors

    def kib(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    torch.set_num_threads(1)
    anchors = _anchors(256, 256)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50_000, 2, generator=g) * 240
    inst = Instances((256, 256), gt_boxes=Boxes(torch.cat([xy, xy + 2 + torch.rand(50_000, 2, generator=g) * 14], 1)))
    inst.gt_classes = torch.zeros(50_000, dtype=torch.int64)
    before = kib("VmRSS:")
    labels, _ = label_anchors(anchors, [inst], Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True), 1)
    print((kib("VmHWM:") - before) / 1024, int((labels == 0).sum()))
""")


def test_matching_50000_boxes_on_one_image_stays_under_1_gb():
    """The RSS high-water mark (torch allocates outside tracemalloc's sight), in a fresh process."""
    tests = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT.format(tests=tests)], capture_output=True, text=True, check=True)
    extra_mb, num_foreground = out.stdout.split()
    assert float(extra_mb) < 1024, f"labelling 50,000 boxes took {extra_mb} MB above the process's size"
    assert int(num_foreground) > 1000
