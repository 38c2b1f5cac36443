"""
The set-up the export tests share (test_export.py, test_rotated_export.py, test_bands.py): a small
random-weight model, the images and exports it is checked on, the detection comparison and the
export tool run as a user runs it.
"""
import torch

from retina_plugin import get_retina_plugin_cfg
from retina_plugin.compare import compare_detections
from retina_plugin.deploy.export import build_model_for_export, export_model
from retina_plugin.deploy.sample_image import sample_image
import tool_runs

# ResNet-18 with random weights; a 0.02 score threshold keeps about a thousand candidates on
# P3 of a 192x256 image, so the top-k limit can be set between two images' counts, and still
# gives detections whose scores spread (no ties) for NMS to order the same in every runtime.
SMALL_MODEL_OPTS = [
    *tool_runs.SMALL_MODEL_OPTS,
    "MODEL.RETINANET.SCORE_THRESH_TEST", "0.02",
    "INPUT.MIN_SIZE_TEST", "192",
    "INPUT.MAX_SIZE_TEST", "256",
]  # fmt: skip


def export_cfg(*opts):
    """The base config with SMALL_MODEL_OPTS, then `opts` (KEY VALUE ...)."""
    cfg = get_retina_plugin_cfg()
    cfg.merge_from_file(str(tool_runs.REPO / tool_runs.BASE_CONFIG))
    cfg.merge_from_list([*SMALL_MODEL_OPTS, *opts])
    return cfg


def candidates_per_level(model, image):
    """How many (anchor, class) pairs of each level score above the threshold."""
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        logits, _ = model.head([features[f] for f in model.head_in_features])
    return [int((x[0] > model.postprocess.logit_thresh).sum()) for x in logits]


def traced_exports(cfg, formats, output_dir):
    """
    For a module fixture, on one thread: the model of `cfg`, three images (2 of 192x256, 1 of
    160x224) and its exports in `formats` into `output_dir`, traced on the first image.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model_for_export(cfg)
    images = [sample_image(cfg, seed=0), sample_image(cfg, seed=1), sample_image(cfg, seed=2)[:, :160, :224]]
    assert images[0].shape == images[1].shape == (3, 192, 256)

    # A top-k limit between the two images' P3 counts: a trace that froze the first image's
    # branch (top-k taken or not) would be wrong or fail on the second.
    traced_count, other_count = (candidates_per_level(model, x)[0] for x in images[:2])
    model.postprocess.topk_candidates = (traced_count + other_count) // 2
    assert abs(traced_count - other_count) > 100, (traced_count, other_count)

    paths = {f: export_model(model, images[0], output_dir, f) for f in formats}
    yield model, images, paths
    torch.set_num_threads(previous_threads)


def assert_same_detections(actual, expected):
    """The same detections (> 0) as a set: class, IoU >= 0.999, score within 1e-5, none left over."""
    result = compare_detections(actual, expected, min_iou=0.999, score_atol=1e-5)
    assert result["count"][1] > 0
    assert result["match"] and result["matched"] == result["count"][0] == result["count"][1], result


def run_export_tool(*args):
    """tools/export_model.py on the base config and `args`; its completed process, succeeded or not."""
    return tool_runs.run_tool("tools/export_model.py", "--config-file", tool_runs.BASE_CONFIG, *args, timeout=180, check=False)
