"""
`write_derived_config`: a config file that inherits another (`_BASE_`, as the configs under
configs/ inherit Base-RetinaNetPlugin.yaml) and sets a few keys on top, each with a comment
saying why. It is plain YAML (lists, numbers, strings), read back by `load_config` before it
is kept.
"""
import os
import tempfile
from typing import Dict, Optional, Sequence

import yaml

from .loading import load_config
from .safe_yaml import ConfigError
from .yaml_bases import BASE_KEY

__all__ = ["write_derived_config"]


def _plain(value):
    """Tuples as lists, numpy and torch scalars as Python numbers: what yaml.safe_dump writes."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def _yaml_value(value) -> str:
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def _tree(values: Dict[str, object], comments: Dict[str, str]) -> dict:
    tree: dict = {}
    for key, value in values.items():
        node = tree
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = (value, comments.get(key))
    return tree


def _lines(tree: dict, indent: str = ""):
    for name, item in tree.items():
        if isinstance(item, dict):
            yield f"{indent}{name}:"
            yield from _lines(item, indent + "  ")
            continue
        value, comment = item
        if comment:
            yield f"{indent}# {' '.join(comment.split())}"
        yield f"{indent}{name}: {_yaml_value(value)}"


def write_derived_config(path: str, base_file: str, values: Dict[str, object], comments: Optional[Dict[str, str]] = None,
                         header: Sequence[str] = (), overwrite: bool = False) -> str:
    """
    Write `path`: `_BASE_: base_file` (relative to `path`'s folder where both are under the
    working folder, else absolute) and `values` (dotted config
    keys, as `cfg.merge_from_list` takes them) on top, `comments[key]` above each key and
    `header` as the first comment lines. The file is loaded back with `load_config` and must
    give `values` (tuples and lists alike); it replaces `path` only then.

    Raises:
        ConfigError: `path` exists (unless `overwrite`), is `base_file` itself, or does not load back.
    """
    if os.path.abspath(path) == os.path.abspath(base_file):
        raise ConfigError(f"{path}: it is the config it would inherit ({BASE_KEY}); write another file")
    if os.path.exists(path) and not overwrite:
        raise ConfigError(f"{path} exists; pass --force to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    lines = [f"# {line}" for line in header]
    base = os.path.abspath(base_file)
    # Relative where both files are in the working folder (a project), so the pair can move together.
    if os.path.commonpath([base, os.path.abspath(path), os.getcwd()]) == os.getcwd():
        base = os.path.relpath(base, folder)
    lines += [f"{BASE_KEY}: {_yaml_value(base)}"]
    lines += list(_lines(_tree(values, comments or {})))
    handle, temporary = tempfile.mkstemp(suffix=".yaml", prefix=".", dir=folder)
    try:
        with os.fdopen(handle, "w") as f:
            f.write("\n".join(lines) + "\n")
        try:
            loaded = load_config(temporary)
        except ConfigError as e:  # named as the file it would have been
            raise ConfigError(str(e).replace(temporary, path)) from None
        for key, value in values.items():
            got = loaded
            for name in key.split("."):
                got = got[name]
            if _plain(got) != _plain(value):
                raise ConfigError(f"{path}: {key} reads back as {got!r}, not {value!r}")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
