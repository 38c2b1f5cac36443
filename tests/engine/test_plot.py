"""
tools/plot_metrics.py as a real subprocess on a synthetic metrics.json, and its loader.
"""
import json

import cv2
import pytest

from retina_plugin.engine.plot import load_metrics
from retina_plugin.errors import InputFileError
from tool_runs import run_tool


def write_metrics(path):
    """A metrics.json as Detectron2's JSONWriter writes it, plus one malformed line."""
    lines = []
    for it in range(19, 400, 20):
        loss_cls, loss_box = 1.1 * 0.995**it, 0.7 * 0.997**it
        lines.append(
            json.dumps(
                {
                    "data_time": 0.01,
                    "iteration": it,
                    "loss_box_reg": loss_box,
                    "loss_cls": loss_cls,
                    "lr": 0.01 * min(1.0, (it + 1) / 100),
                    "time": 0.3,
                    "total_loss": loss_cls + loss_box,
                }
            )
        )
        if it == 199:
            lines.append('{"iteration": 219, "loss_cls": 0.5')  # truncated line
    for it, ap in ((199, 12.5), (399, 20.0)):
        evaluation = {"bbox/AP": ap, "bbox/AP50": 2 * ap, "bbox/AP75": ap - 1, "bbox/APs": ap / 4}
        lines.append(json.dumps({**evaluation, "iteration": it}))
    path.write_text("\n".join(lines) + "\n")


def test_plot_metrics_writes_png(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_metrics(run_dir / "metrics.json")

    result = run_tool("tools/plot_metrics.py", str(run_dir), check=False)

    assert result.returncode == 0, result.stderr
    assert "Skipped 1 malformed" in result.stderr
    png = cv2.imread(str(run_dir / "metrics.png"))
    assert png is not None
    assert png.shape[0] >= 400 and png.shape[1] >= 400
    assert png.std() > 5, "the plot is blank"

    log = load_metrics(str(run_dir / "metrics.json"))
    assert log.num_skipped == 1 and log.num_lines == 22
    assert log.loss_keys() == ["total_loss", "loss_box_reg", "loss_cls"]
    assert [it for it, _ in log.series["bbox/AP"]] == [199, 399]


def test_plot_metrics_without_evaluation_and_custom_out(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"iteration": 0, "total_loss": 1.8, "loss_cls": 1.1, "lr": 1e-5}) + "\n")
    out = tmp_path / "plots" / "curves.png"

    result = run_tool("tools/plot_metrics.py", str(metrics), "--out", str(out), check=False)

    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out)) is not None
    assert load_metrics(str(metrics)).ap_keys() == []


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_plot_metrics_fails_clearly_without_metrics(tmp_path, content):
    metrics = tmp_path / "metrics.json"
    if content is not None:
        metrics.write_text(content)

    result = run_tool("tools/plot_metrics.py", str(tmp_path), check=False)

    assert result.returncode != 0
    assert str(metrics) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "metrics.png").exists()


def test_load_metrics_rejects_file_without_usable_lines(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('not json\n{"no_iteration": 1}\n[1, 2]\n{"iteration": 5, "time": 0.2}\n')
    expected = "No usable lines in .*metrics.json: 1 well-formed and 3 malformed"
    with pytest.raises(InputFileError, match=expected):
        load_metrics(str(metrics))
    with pytest.raises(InputFileError, match="nothing.json"):
        load_metrics(str(tmp_path / "nothing.json"))
