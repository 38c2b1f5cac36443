"""
MODEL.RETINA_PLUGIN.WINOGRAD "auto" (the default): direct or Winograd and the chunk size per
convolution shape from a measurement on this machine, made once and cached in a JSON file per
CPU model, torch version and thread count; a foreign or corrupt cache is ignored and measured
again; True / False force as before; the detections equal the direct convolution's.
"""
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from retina_plugin import ConfigError, load_config
from retina_plugin.compare import compare_detections
from retina_plugin.modeling import winograd, winograd_tuning
from tests.modeling.test_parity import calibrate_frozen_batchnorm
from tests.modeling.test_winograd import conv_case, r50_cfg, scale_predictors

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own; returns the path of this machine's cache file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # Whatever else runs on these cores, measurements are written (test_busy_machine_... checks the guard).
    monkeypatch.setattr(winograd_tuning, "MAX_LOAD_PER_CORE", float("inf"))
    winograd_tuning.forget()
    yield winograd_tuning.cache_path(winograd_tuning.machine_key())
    winograd_tuning.forget()


def small_model(small_cfg, mode):
    small_cfg.MODEL.RETINA_PLUGIN.WINOGRAD = mode
    torch.manual_seed(0)
    return build_model(small_cfg).eval()


def run(model, seed=0, size=(96, 128)):
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(seed)) * 255
    with torch.no_grad():
        return model([{"image": image}])[0]["instances"]


def test_auto_measures_each_shape_once_and_a_second_build_reads_the_cache(cache, small_cfg):
    assert load_config(None, []).MODEL.RETINA_PLUGIN.WINOGRAD == "auto"
    before = winograd_tuning.measurements
    run(small_model(small_cfg, "auto"))
    content = json.loads(cache.read_text())
    assert content["machine"] == winograd_tuning.machine_key()
    shapes = content["shapes"]
    # The head's 256-channel subnets (filters kept) on the five levels P3-P7 of a 96x128
    # image, its box predictor (36 out; the class predictor's 27 are below MIN_OUT_CHANNELS),
    # and the per-call convs with >= 128 in: ResNet-18 res3, res4, res5, the FPN outputs P3-P5.
    for level in ("12x16", "6x8", "3x4", "2x2", "1x1"):
        assert f"1x256x{level} nhwc -> 256, filters kept" in shapes
        assert f"1x256x{level} nhwc -> 36, filters kept" in shapes
    assert "1x128x12x16 nhwc -> 128, filters per call" in shapes  # res3
    assert "1x512x3x4 nhwc -> 512, filters per call" in shapes  # res5
    assert "1x256x12x16 nhwc -> 256, filters per call" in shapes  # the FPN output on P3
    assert winograd_tuning.measurements - before == len(shapes) == 15
    for entry in shapes.values():
        # the choice is the fastest of the measured candidates
        assert "direct" in entry["ms"] and len(entry["ms"]) >= 2
        fastest = min(entry["ms"], key=entry["ms"].get)
        assert fastest == (entry["algorithm"] if entry["algorithm"] == "direct" else f"winograd/{entry['tiles_per_chunk']}")

    # a new process (the tables read are forgotten) and a new model: read, not measured
    winograd_tuning.forget()
    mtime, measured = cache.stat().st_mtime_ns, winograd_tuning.measurements
    run(small_model(small_cfg, "auto"), seed=1)
    assert winograd_tuning.measurements == measured and cache.stat().st_mtime_ns == mtime
    # a new input size is measured and added
    run(small_model(small_cfg, "auto"), size=(64, 64))
    assert winograd_tuning.measurements > measured
    assert "1x256x8x8 nhwc -> 256, filters kept" in json.loads(cache.read_text())["shapes"]


def test_a_measurement_under_load_is_used_but_not_written(cache, small_cfg, monkeypatch, caplog):
    # Any load counts as busy: every shape is measured and used, none is written.
    monkeypatch.setattr(winograd_tuning, "MAX_LOAD_PER_CORE", -1.0)
    before = winograd_tuning.measurements
    with caplog.at_level(logging.WARNING, logger=winograd_tuning.__name__):
        detections = run(small_model(small_cfg, "auto"))
    assert winograd_tuning.measurements - before == 15
    assert not cache.exists()
    busy = [r.getMessage() for r in caplog.records if "not written to" in r.getMessage()]
    assert len(busy) == 15 and str(cache) in busy[0]
    # the same process keeps its choices: a second call measures nothing
    assert len(run(small_model(small_cfg, "auto"))) == len(detections)
    assert winograd_tuning.measurements - before == 15


def test_cache_entries_measured_under_load_are_measured_again(cache, small_cfg, monkeypatch, caplog):
    # Every measurement here reads a quiet machine, whatever else runs on these cores.
    monkeypatch.setattr(winograd_tuning.os, "getloadavg", lambda: (0.25, 0.25, 0.25))
    run(small_model(small_cfg, "auto"))
    # Two entries as an earlier version wrote them: one measured at load 9, one quiet.
    content = json.loads(cache.read_text())
    shapes = content["shapes"]
    busy_shape, quiet_shape = "1x256x12x16 nhwc -> 256, filters kept", "1x256x6x8 nhwc -> 256, filters kept"
    shapes[busy_shape] = {"algorithm": "direct", "tiles_per_chunk": None, "ms": {"direct": 1.0}, "load_average_1min": 9.0}
    shapes[quiet_shape] = {"algorithm": "direct", "tiles_per_chunk": None, "ms": {"direct": 1.0}, "load_average_1min": 0.5}
    cache.write_text(json.dumps(content))
    monkeypatch.setattr(winograd_tuning, "MAX_LOAD_PER_CORE", 1.0)
    monkeypatch.setattr(winograd_tuning.os, "cpu_count", lambda: 2)
    winograd_tuning.forget()
    before = winograd_tuning.measurements
    with caplog.at_level(logging.WARNING, logger=winograd_tuning.__name__):
        run(small_model(small_cfg, "auto"), seed=1)
    assert winograd_tuning.measurements - before == 1  # the busy entry only
    assert any(f"1 entries of {cache} were measured above load 1.0 per core ({busy_shape}" in r.getMessage() for r in caplog.records)
    rewritten = json.loads(cache.read_text())["shapes"]
    assert rewritten[busy_shape]["load_average_1min"] == 0.25 and len(rewritten[busy_shape]["ms"]) >= 2
    assert rewritten[quiet_shape]["ms"] == {"direct": 1.0}  # a quiet entry is kept as it was


def test_chunk_candidates_are_those_that_chunk_differently():
    assert winograd.distinct_chunks(100, 152, 256) == (64, 128, 256, 512)  # 38 tiles a row: 1, 3, 6, 13 rows
    assert winograd.distinct_chunks(12, 16, 256) == (64,)  # 3 rows of 4 tiles: one chunk for all
    assert winograd.distinct_chunks(40, 60, 256) == (64, 128, 256)  # 10 rows of 15 tiles: 4, 8, all 10 rows


def conv_choice(x, weight, bias):
    return winograd.tuned(x, weight, bias)


@pytest.mark.parametrize("machine", [{"cpu": "Another CPU"}, {"torch": "1.0.0"}, {"threads": 64}])
def test_a_cache_of_another_machine_is_ignored(cache, machine, caplog):
    x, weight, bias = conv_case(1, 128, 64, 12, 12)
    foreign = {**winograd_tuning.machine_key(), **machine}
    shape = "1x128x12x12 nhwc -> 64, filters per call"
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"machine": foreign, "shapes": {shape: {"algorithm": "winograd", "tiles_per_chunk": 64}}}))
    before = winograd_tuning.measurements
    with caplog.at_level(logging.WARNING, logger=winograd_tuning.__name__):
        conv_choice(x, weight, bias)
    assert winograd_tuning.measurements == before + 1
    assert [r.getMessage() for r in caplog.records if "another machine" in r.getMessage()] != []
    assert len(caplog.records) == 1
    # rewritten as this machine's
    assert json.loads(cache.read_text())["machine"] == winograd_tuning.machine_key()


@pytest.mark.parametrize("text", ["{not json", "[]", '{"machine": MACHINE, "shapes": {"s": {"algorithm": "__import__"}}}'])
def test_a_corrupt_cache_gives_one_log_line_and_is_measured_again(cache, text, caplog):
    x, weight, bias = conv_case(1, 128, 64, 12, 12)
    cache.parent.mkdir(parents=True)
    cache.write_text(text.replace("MACHINE", json.dumps(winograd_tuning.machine_key())))
    before = winograd_tuning.measurements
    with caplog.at_level(logging.WARNING, logger=winograd_tuning.__name__):
        algorithm, chunk = conv_choice(x, weight, bias)
    assert winograd_tuning.measurements == before + 1
    assert len(caplog.records) == 1 and str(cache) in caplog.records[0].getMessage()
    entry = json.loads(cache.read_text())["shapes"]["1x128x12x12 nhwc -> 64, filters per call"]
    assert (entry["algorithm"], entry["tiles_per_chunk"]) == (algorithm, chunk)


def test_true_and_false_force_as_before_without_measuring(cache, small_cfg):
    before = winograd_tuning.measurements
    x, weight, bias = conv_case(1, 128, 64, 32, 32)
    geometry = ((1, 1), (1, 1), (1, 1), 1)
    assert torch.equal(winograd.conv2d(x, weight, bias, *geometry, winograd=False), F.conv2d(x, weight, bias, 1, 1))
    static = winograd.winograd_conv2d(x, winograd.transform_filter(weight), bias)
    assert torch.equal(winograd.conv2d(x, weight, bias, *geometry, winograd=True), static)
    direct = run(small_model(small_cfg, False))
    forced = run(small_model(small_cfg, True))
    assert winograd_tuning.measurements == before and not cache.exists()
    assert compare_detections(forced, direct, min_iou=0.999, score_atol=1e-4)["match"]


def test_auto_gives_the_direct_convolutions_detections(cache):
    """An R50-FPN with "auto", once as measured and once with every shape's choice Winograd with the smallest chunks."""
    image = torch.rand(3, 128, 192, generator=torch.Generator().manual_seed(2)) * 255
    torch.manual_seed(0)
    direct = build_model(r50_cfg(False)).eval()
    calibrate_frozen_batchnorm(direct, [{"image": image}])
    scale_predictors(direct, image)
    auto = build_model(r50_cfg("auto")).eval()
    auto.load_state_dict(direct.state_dict())
    with torch.no_grad():
        ref = direct([{"image": image}])[0]["instances"]
        measured = auto([{"image": image}])[0]["instances"]
        content = json.loads(cache.read_text())
        for entry in content["shapes"].values():
            entry.update(algorithm="winograd", tiles_per_chunk=min(winograd_tuning.CHUNK_CANDIDATES))
        cache.write_text(json.dumps(content))
        winograd_tuning.forget()
        all_winograd = auto([{"image": image}])[0]["instances"]
    assert len(ref) >= 30
    for out in (measured, all_winograd):
        result = compare_detections(out, ref, min_iou=0.999, score_atol=1e-4)
        assert result["match"] and result["ties"] <= 2, result
    assert not torch.equal(all_winograd.scores, ref.scores)  # Winograd ran: float rounding differs


@pytest.mark.parametrize("value", ["maybe", "1", "None"])
def test_winograd_key_takes_auto_true_or_false(value, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("_BASE_: %s\nMODEL:\n  RETINA_PLUGIN:\n    WINOGRAD: false\n" % (winograd_tuning.Path("configs/Base-RetinaNetPlugin.yaml").resolve()))
    assert load_config(str(config)).MODEL.RETINA_PLUGIN.WINOGRAD is False
    assert load_config(str(config), ["MODEL.RETINA_PLUGIN.WINOGRAD", "auto"]).MODEL.RETINA_PLUGIN.WINOGRAD == "auto"
    assert load_config(str(config), ["MODEL.RETINA_PLUGIN.WINOGRAD", "True"]).MODEL.RETINA_PLUGIN.WINOGRAD is True
    if value == "None":
        # null means the default: the file's value stays
        assert load_config(str(config), ["MODEL.RETINA_PLUGIN.WINOGRAD", value]).MODEL.RETINA_PLUGIN.WINOGRAD is False
        return
    with pytest.raises(ConfigError, match="WINOGRAD"):
        load_config(str(config), ["MODEL.RETINA_PLUGIN.WINOGRAD", value])
