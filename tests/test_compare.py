"""retina_plugin.compare: detections compared as sets, near-tied scores allowed to differ."""
import torch

from retina_plugin.compare import compare_detections


def detections(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 400
    boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 80], dim=1)
    scores = torch.linspace(0.9, 0.1, n)
    classes = torch.arange(n) % 3
    return boxes, scores, classes


def test_same_detections_in_another_order_match():
    boxes, scores, classes = detections()
    order = torch.randperm(len(boxes), generator=torch.Generator().manual_seed(1))
    result = compare_detections((boxes[order], scores[order] + 5e-5, classes[order]), (boxes, scores, classes))
    assert result["match"] and result["matched"] == 10 and result["ties"] == 0 and result["unmatched"] == 0
    assert result["max_score_diff"] < 1e-4 and result["min_iou"] > 0.999


def test_another_class_a_moved_box_or_a_score_off_do_not_match():
    boxes, scores, classes = detections()
    for change in ("class", "box", "score"):
        b, s, c = boxes.clone(), scores.clone(), classes.clone()
        if change == "class":
            c[3] = (c[3] + 1) % 3
        elif change == "box":
            b[3] += 10.0
        else:
            s[3] += 0.01
        result = compare_detections((b, s, c), (boxes, scores, classes))
        assert not result["match"], change
        assert result["matched"] == 9 and result["unmatched"] == 2, (change, result)


def test_a_near_tie_at_the_cap_is_a_tie_not_a_mismatch():
    # Both lists were cut at 10 detections; the 10th and an 11th candidate scored within 1e-4.
    boxes, scores, classes = detections(11)
    scores[10] = scores[9] - 2e-5
    ours = (torch.cat([boxes[:9], boxes[10:]]), torch.cat([scores[:9], scores[10:]]), torch.cat([classes[:9], classes[10:]]))
    reference = (boxes[:10], scores[:10], classes[:10])
    result = compare_detections(ours, reference)
    assert result["match"] and result["matched"] == 9 and result["ties"] == 2 and result["unmatched"] == 0
