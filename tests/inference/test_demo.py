"""
tools/demo.py as a real subprocess from the repo root (images, a video, a missing input)
with a small random-init RetinaNetPlugin on the CPU, and its input/output path helpers.
"""
import os

import cv2
import numpy as np
import pytest

import tool_runs
from tool_runs import BASE_CONFIG, REPO, run_tool
from retina_plugin.inference.media import (
    InputFileError,
    image_output_paths,
    read_bgr_image,
    resolve_image_inputs,
    video_output_path,
)


# A ResNet-18 RetinaNetPlugin with random weights on the CPU. PRIOR_PROB 0.5 puts every score
# near 0.5, so with --confidence-threshold 0.3 it detects (random) boxes on any image; 20 per
# image keep the drawing fast.
SMALL_MODEL_OPTS = [
    *tool_runs.SMALL_MODEL_OPTS,
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.RETINANET.PRIOR_PROB", "0.5",
    "TEST.DETECTIONS_PER_IMAGE", "20",
    "INPUT.MIN_SIZE_TEST", "256",
    "INPUT.MAX_SIZE_TEST", "512",
]  # fmt: skip


def run_demo(*args):
    """Run tools/demo.py with the small random model and a low threshold; fail with its output."""
    result = run_tool(
        "tools/demo.py",
        "--config-file", BASE_CONFIG,
        "--confidence-threshold", "0.3",
        *args,
        "--opts", *SMALL_MODEL_OPTS, check=False)  # fmt: skip
    assert result.returncode == 0, f"demo.py failed:\n{result.stdout}\n{result.stderr}"
    return result


def synthetic_image(height, width, seed):
    """A BGR image: a flat background with a few filled rectangles."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 180, dtype=np.uint8)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        color = tuple(int(c) for c in rng.integers(0, 255, size=3))
        cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness=-1)
    return image


def count_changed_pixels(a, b, min_difference=30):
    """The number of pixels of which some channel differs by more than `min_difference`."""
    difference = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
    return int((difference > min_difference).sum())


def write_video(path, frames, fps=10.0):
    """Write BGR `frames` to an mp4v video."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()


def read_video(path):
    """All frames of a video, and its frame rate."""
    video = cv2.VideoCapture(str(path))
    assert video.isOpened(), f"cannot open {path}"
    fps = video.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        success, frame = video.read()
        if not success:
            break
        frames.append(frame)
    video.release()
    return frames, fps


def test_demo_draws_detections_on_images(tmp_path):
    inputs = {"first.png": synthetic_image(120, 160, seed=0), "second.png": synthetic_image(96, 144, seed=1)}
    input_dir = tmp_path / "images"
    input_dir.mkdir()
    for name, image in inputs.items():
        cv2.imwrite(str(input_dir / name), image)
    (input_dir / "notes.txt").write_text("not an image, skipped when the directory is the input")
    output_dir = tmp_path / "annotated"

    result = run_demo("--input", str(input_dir), "--output", str(output_dir))

    log = result.stdout + result.stderr
    assert sorted(os.listdir(output_dir)) == sorted(inputs)
    for name, image in inputs.items():
        written = cv2.imread(str(output_dir / name))
        assert written is not None, f"{name} was not written; output:\n{log}"
        assert written.shape == image.shape
        assert count_changed_pixels(written, image) > 100, "no boxes drawn"
        assert f"{name}: detected" in log
    assert "instances in" in log


def test_demo_missing_input_fails_naming_the_path(tmp_path):
    missing = tmp_path / "does_not_exist.jpg"
    result = run_tool("tools/demo.py", "--config-file", BASE_CONFIG, "--input", str(missing), "--output", str(tmp_path / "out"),
        "--opts", *SMALL_MODEL_OPTS, check=False)  # fmt: skip
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_annotates_every_video_frame(tmp_path):
    frames = [synthetic_image(96, 128, seed=10 + i) for i in range(5)]
    video_path = tmp_path / "clip.mp4"
    write_video(video_path, frames, fps=10.0)
    output_dir = tmp_path / "annotated"

    run_demo("--video-input", str(video_path), "--output", str(output_dir))

    out_frames, fps = read_video(output_dir / "clip.mp4")
    assert len(out_frames) == 5
    assert fps == pytest.approx(10.0)
    assert out_frames[0].shape == frames[0].shape


def test_input_helpers_report_bad_paths(tmp_path):
    not_an_image = tmp_path / "broken.png"
    not_an_image.write_text("this is not a PNG")
    with pytest.raises(InputFileError, match="broken.png"):
        read_bgr_image(str(not_an_image))
    with pytest.raises(InputFileError, match="no file"):
        resolve_image_inputs([str(tmp_path / "*.jpg")])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(InputFileError, match="empty"):
        resolve_image_inputs([str(empty_dir)])
    images = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    with pytest.raises(InputFileError, match="both be written"):
        image_output_paths(images, str(tmp_path / "out"))
    with pytest.raises(InputFileError, match="must be a directory"):
        image_output_paths(images, str(tmp_path / "out.png"))
    with pytest.raises(InputFileError, match="overwrite"):
        image_output_paths(images[:1], str(tmp_path / "a"))


def test_output_paths(tmp_path):
    images = [str(tmp_path / "in" / "x.png"), str(tmp_path / "in" / "y.jpg")]
    out_dir = tmp_path / "out"
    assert image_output_paths(images, str(out_dir)) == [str(out_dir / "x.png"), str(out_dir / "y.jpg")]
    assert out_dir.is_dir()
    out_file = tmp_path / "new" / "annotated.png"
    assert image_output_paths(images[:1], str(out_file)) == [str(out_file)]
    assert out_file.parent.is_dir()
    assert video_output_path(str(tmp_path / "clip.avi"), str(out_dir)) == str(out_dir / "clip.mp4")


def test_per_class_thresholds_file_keeps_each_class_above_its_own(tmp_path, small_cfg, single_thread):
    import torch

    from retina_plugin.cli.demo import demo_config
    from retina_plugin.inference.visualizer import DetectionVisualizer

    small_cfg.MODEL.RETINANET.PRIOR_PROB = 0.5  # random weights: every score near 0.5
    image = synthetic_image(128, 160, seed=3)
    torch.manual_seed(0)
    everything, _ = DetectionVisualizer(small_cfg).run_on_image(image)
    scores, classes = everything["instances"].scores, everything["instances"].pred_classes
    common = int(classes.mode().values)  # the class with most detections keeps its upper half, the others none
    thresholds = [1.0, 1.0, 1.0]
    thresholds[common] = float(scores[classes == common].median())
    torch.manual_seed(0)  # the same weights
    kept, _ = DetectionVisualizer(small_cfg, class_thresholds=thresholds).run_on_image(image)
    expected = (classes == common) & (scores >= thresholds[common])
    assert torch.equal(kept["instances"].scores, scores[expected])
    assert 0 < len(kept["instances"]) < len(scores)

    # the file form: class names of DATASETS.TEST[0]; a name the model lacks is one error line
    config = tmp_path / "cfg.yaml"
    config.write_text('_BASE_: "%s"\nDATASETS:\n  TEST: ("shapes_val",)\n' % (REPO / "configs" / "shapes_R18_cpu.yaml"))
    (tmp_path / "thresholds.yaml").write_text("circle: 0.3\nsquare: 0.6\ntriangle: 0.45\n")
    cfg, per_class = demo_config(str(config), ["MODEL.WEIGHTS", ""], str(tmp_path / "thresholds.yaml"))
    assert per_class == [0.3, 0.6, 0.45] and cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.3
    (tmp_path / "bad.yaml").write_text("circle: 0.3\nhexagon: 0.5\n")
    result = run_tool("tools/demo.py", "--config-file", str(config), "--input", str(tmp_path / "none.png"),
                      "--output", str(tmp_path / "out"), "--confidence-threshold", str(tmp_path / "bad.yaml"),
                      "--opts", "MODEL.WEIGHTS", "", check=False)
    assert result.returncode == 2
    assert "demo: error: " in result.stderr and "'hexagon' is not a class of the model" in result.stderr
