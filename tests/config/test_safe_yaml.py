"""
Configs are data (retina_plugin/config/safe_yaml.py, yaml_bases.py, arithmetic.py): a YAML tag
that would run code, on every route a YAML reaches the plugin (the config, a local `_BASE_`, an
http `_BASE_`, a `.yaml` LazyConfig), ends the tool with one line and never runs; the arithmetic
of Detectron2's zoo is computed without `eval`; bad `_BASE_` targets are one line each.
"""
import contextlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from retina_plugin.config import ConfigError, get_retina_plugin_cfg, load_config
from retina_plugin.config.safe_yaml import MAX_YAML_BYTES, parse_yaml
from retina_plugin.config.yaml_bases import TRUSTED_URLS_ENV

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "configs" / "shapes_R18_cpu.yaml"


def _evil_yaml(marker: Path) -> str:
    return f'MODEL:\n  WEIGHTS: !!python/object/apply:os.system ["touch {marker}"]\n'


def _run(tool: str, *args, env=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _assert_one_line_refusal(proc, tool: str, *words: str):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith(f"{tool}: error: config file "), lines[-1]
    for word in words:
        assert word in lines[-1], lines[-1]


@contextlib.contextmanager
def _served(folder: Path):
    """An http.server on 127.0.0.1 serving `folder` in a thread; yields its URL and the paths asked for."""
    asked = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            asked.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_tag_in_the_config_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    config = tmp_path / "evil.yaml"
    config.write_text(_evil_yaml(marker))
    proc = _run("train_net.py", "--config-file", str(config), "--eval-only", "MODEL.DEVICE", "cpu")
    _assert_one_line_refusal(proc, "train_net", str(config), "line 2", "!!python/object/apply:os.system")
    assert not marker.exists()


def test_a_tag_in_a_local_base_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    (tmp_path / "base.yaml").write_text(_evil_yaml(marker))
    config = tmp_path / "sub" / "child.yaml"
    config.parent.mkdir()
    config.write_text('_BASE_: "../base.yaml"\nSOLVER:\n  BASE_LR: 0.1\n')
    image = tmp_path / "image.png"
    image.write_bytes(b"")
    proc = _run("demo.py", "--config-file", str(config), "--input", str(image), "--output", str(tmp_path / "out"))
    _assert_one_line_refusal(proc, "demo", "base.yaml", "!!python/object/apply:os.system")
    assert not marker.exists()


def test_an_http_base_is_refused_unless_trusted_and_then_read_as_data(tmp_path):
    marker = tmp_path / "code_ran"
    served = tmp_path / "served"
    served.mkdir()
    (served / "evil.yaml").write_text(_evil_yaml(marker))
    with _served(served) as (url, asked):
        config = tmp_path / "child.yaml"
        config.write_text(f'_BASE_: "{url}evil.yaml"\n')
        untrusted = _run("train_net.py", "--config-file", str(config), "--eval-only")
        _assert_one_line_refusal(untrusted, "train_net", f"{url}evil.yaml", TRUSTED_URLS_ENV)
        assert asked == []  # refused before any request
        trusted = _run("train_net.py", "--config-file", str(config), "--eval-only", env={TRUSTED_URLS_ENV: url})
        _assert_one_line_refusal(trusted, "train_net", f"{url}evil.yaml", "!!python/object/apply:os.system")
        assert asked == ["/evil.yaml"]
    assert not marker.exists()


def test_a_trusted_http_base_loads_its_values_and_relative_bases(tmp_path, monkeypatch):
    served = tmp_path / "served"
    (served / "more").mkdir(parents=True)
    (served / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.125\n  MAX_ITER: 7\n")
    (served / "more" / "mid.yaml").write_text('_BASE_: "../base.yaml"\nSOLVER:\n  MAX_ITER: 9\n')
    with _served(served) as (url, asked):
        config = tmp_path / "child.yaml"
        config.write_text(f'_BASE_: "{url}more/mid.yaml"\n')
        monkeypatch.setenv(TRUSTED_URLS_ENV, url.rstrip("/"))
        cfg = load_config(str(config))
        assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (0.125, 9)
        assert asked == ["/more/mid.yaml", "/base.yaml"]
        # a prefix trusts its own folder only: "http://127.0.0.1:PORT/more" does not trust ../base.yaml
        monkeypatch.setenv(TRUSTED_URLS_ENV, url + "more")
        with pytest.raises(ConfigError, match="refusing to fetch"):
            load_config(str(config))


def test_a_yaml_lazyconfig_never_runs_its_tags(tmp_path):
    marker = tmp_path / "code_ran"
    config = tmp_path / "lazy.yaml"
    config.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\ntrain: {{}}\n')
    proc = _run("lazyconfig_train_net.py", "--config-file", str(config), "--eval-only")
    _assert_one_line_refusal(proc, "lazyconfig_train_net", str(config), "!!python/object/apply:os.system")
    assert not marker.exists()


def test_the_zoo_arithmetic_is_computed_without_eval():
    expression = "[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"
    loaded = parse_yaml(f'SIZES: !!python/object/apply:eval ["{expression}"]\nT: !!python/tuple [1, 2]\n', "z.yaml")
    assert loaded == {"SIZES": eval(expression), "T": (1, 2)}
    assert parse_yaml('V: !!python/object/apply:eval ["-(2 + 3) * 4 / 8, [y ** 2 for y in (1, 2)]"]', "v.yaml") == {"V": (-2.5, [1, 4])}


@pytest.mark.parametrize("expression,why", [
    ('__import__(\\"os\\").system(\\"true\\")', "Call is not allowed"),
    ("().__class__", "Attribute is not allowed"),
    ("open", "the name 'open' is not allowed"),
    ("[x for x in range(3)]", "only run over a literal list"),
    ("[x for x in [1, 2] if x]", "may only be `for NAME in [...]`"),
    ("[0] * 10", "arithmetic on list is not allowed"),
    ("9 ** 9 ** 9", "is too large"),
    ("[[[0 for a in [" + ",".join(["0"] * 100) + "]] for b in [" + ",".join(["0"] * 100) + "]] for c in [" + ",".join(["0"] * 100) + "]]", "more than 100000 values"),
    ("1 / 0", "ZeroDivisionError"),
    ("'text'", "is not a number"),
])  # fmt: skip
def test_other_expressions_are_refused_in_one_line(tmp_path, expression, why):
    config = tmp_path / "expr.yaml"
    config.write_text(f'MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: !!python/object/apply:eval ["{expression}"]\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(config))
    message = str(e.value)
    assert "\n" not in message and why in message, message
    assert message.startswith(f"config file {config}: line 3: refusing !!python/object/apply:eval "), message


def _one_line_config_error(config) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(str(config))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_bases_are_one_line_naming_the_file(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text('_BASE_: "b.yaml"\n')
    b.write_text('_BASE_: ["a.yaml"]\n')
    assert _one_line_config_error(a) == f"config file {a}: _BASE_ makes a cycle: {a} -> {b} -> {a}"

    passwd = tmp_path / "passwd"  # the shape of /etc/passwd: one YAML string
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    for target, words in [
        (passwd, f"config file {passwd}: holds a str, not a mapping"),
        ("/dev/zero", f"config file /dev/zero: larger than {MAX_YAML_BYTES // 2**20} MiB"),
        (tmp_path / "latin1.yaml", "latin1.yaml: not UTF-8 text"),
        (tmp_path / "missing.yaml", "is neither a file"),
        (tmp_path, "cannot be read"),  # a folder
        (tmp_path / "list.yaml", "list.yaml: holds a list, not a mapping"),
    ]:
        (tmp_path / "latin1.yaml").write_bytes("SOLVER:\n  BASE_LR: 0.1 # \xe9t\xe9\n".encode("latin-1"))
        (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
        config = tmp_path / "child.yaml"
        config.write_text(f'_BASE_: "{target}"\n')
        assert words in _one_line_config_error(config)

    config = tmp_path / "scalar_base.yaml"
    config.write_text("_BASE_: 3\n")
    assert "_BASE_ must name a config file" in _one_line_config_error(config)
    (tmp_path / "mapping.yaml").write_text("SOLVER: 1\n")
    config.write_text('_BASE_: "mapping.yaml"\nSOLVER:\n  BASE_LR: 0.1\n')
    assert "SOLVER is a mapping here but 1 in its _BASE_" in _one_line_config_error(config)


def test_a_base_may_be_a_model_zoo_name(tmp_path):
    from detectron2 import model_zoo

    config = tmp_path / "zoo_child.yaml"
    config.write_text('_BASE_: "COCO-Detection/retinanet_R_50_FPN_1x.yaml"\nSOLVER:\n  BASE_LR: 0.5\n')
    expected = get_retina_plugin_cfg()
    expected.merge_from_file(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    expected.SOLVER.BASE_LR = 0.5
    assert load_config(str(config)).dump() == expected.dump()


def test_the_plugins_configs_load_as_detectron2_loads_them():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        expected = get_retina_plugin_cfg()
        expected.merge_from_file(str(path))
        assert load_config(str(path)).dump() == expected.dump(), path


def test_aliases_that_expand_exponentially_or_refer_to_themselves_are_one_line(tmp_path):
    levels = ["a0: &a0 {x: 1, y: [1, 2, 3, 4, 5, 6, 7, 8, 9]}"]
    levels += [f"a{i}: &a{i} {{{', '.join(f'k{j}: *a{i - 1}' for j in range(10))}}}" for i in range(1, 6)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    assert f"config file {bomb}: its YAML aliases expand to more than 1000000 values" == _one_line_config_error(bomb)
    loop = tmp_path / "loop.yaml"
    loop.write_text("MODEL:\n  PIXEL_MEAN: &m [1, *m]\n")
    assert "a YAML alias refers to a node that holds it" in _one_line_config_error(loop)
    shared = tmp_path / "shared.yaml"  # an alias used a few times is fine
    shared.write_text("MODEL:\n  PIXEL_MEAN: &m [1.0, 2.0, 3.0]\n  PIXEL_STD: *m\n")
    assert load_config(str(shared)).MODEL.PIXEL_STD == [1.0, 2.0, 3.0]
