"""
`load_yaml_with_bases`: a YAML config and the `_BASE_` configs it inherits, merged as Detectron2's
`CfgNode.load_yaml_with_base` merges them, each parsed as data (`safe_yaml`), never with
`yaml.unsafe_load`.

A `_BASE_` (one name or a list) is a file, relative to the config that names it (or absolute, or
`~/...`), else a Detectron2 model-zoo config ("COCO-Detection/retinanet_R_50_FPN_1x.yaml", as
`detectron2.model_zoo.get_config_file` finds it). An `http://` or `https://` base is fetched only
when it starts with one of the URL prefixes in the environment variable
RETINA_PLUGIN_TRUSTED_CONFIG_URLS (space-separated; a prefix matches up to a "/"), and is then
parsed as data like any file; its own relative bases resolve against its URL. A cycle of bases,
a base that is not a mapping, a file that cannot be read, is not UTF-8 or is larger than
MAX_YAML_BYTES raise ConfigError naming the file.
"""
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List

from .safe_yaml import MAX_YAML_BYTES, ConfigError, decode_config_bytes, parse_yaml, read_config_text

__all__ = ["BASE_KEY", "TRUSTED_URLS_ENV", "load_yaml_with_bases"]

BASE_KEY = "_BASE_"
TRUSTED_URLS_ENV = "RETINA_PLUGIN_TRUSTED_CONFIG_URLS"
URL_TIMEOUT_S = 30


def load_yaml_with_bases(filename: str) -> Dict[str, Any]:
    """The mapping of config `filename` merged over its `_BASE_` configs (recursively)."""
    return _load(filename, [])


def _load(source: str, chain: List[str]) -> Dict[str, Any]:
    identity = source if _is_url(source) else os.path.realpath(source)
    if identity in chain:
        cycle = " -> ".join(chain[chain.index(identity):] + [identity])
        raise ConfigError(f"config file {source}: {BASE_KEY} makes a cycle: {cycle}")
    text = _fetch(source) if _is_url(source) else read_config_text(source)
    cfg = parse_yaml(text, source)
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {source}: holds a {type(cfg).__name__}, not a mapping of config keys")
    if BASE_KEY not in cfg:
        return cfg
    bases = cfg.pop(BASE_KEY)
    names = bases if isinstance(bases, list) else [bases]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ConfigError(f"config file {source}: {BASE_KEY} must name a config file or a list of them (it is {bases!r})")
    merged: Dict[str, Any] = {}
    for name in names:
        _merge_into(_load(_resolve(name, source), chain + [identity]), merged, source)
    _merge_into(cfg, merged, source)
    return merged


def _resolve(name: str, including: str) -> str:
    """Where `_BASE_: name` in the config `including` points: a URL, a file, or a model-zoo config."""
    if _is_url(name):
        return name
    if _is_url(including):
        return urllib.parse.urljoin(including, name)
    path = os.path.expanduser(name)
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(including), path)
    if os.path.exists(path):
        return path
    from detectron2 import model_zoo

    try:
        return model_zoo.get_config_file(name)
    except RuntimeError:
        raise ConfigError(
            f"config file {including}: {BASE_KEY} {name!r} is neither a file ({path}) nor a Detectron2 model-zoo config"
        ) from None


def _fetch(url: str) -> str:
    if not _trusted(url):
        raise ConfigError(
            f"config file {url}: refusing to fetch a config from a URL; if you trust it, set "
            f"{TRUSTED_URLS_ENV}='{_origin(url)}' (space-separated URL prefixes), or download it and name the file"
        )
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            final_url = response.geturl()
            data = response.read(MAX_YAML_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ConfigError(f"config file {url}: cannot be fetched: {getattr(e, 'reason', e)}") from None
    if not _trusted(final_url):
        raise ConfigError(f"config file {url}: redirected to {final_url}, which {TRUSTED_URLS_ENV} does not trust")
    return decode_config_bytes(data, url)


def _trusted(url: str) -> bool:
    # A prefix must match up to a "/" so that "https://example.org" does not trust "https://example.org.evil/".
    for prefix in os.environ.get(TRUSTED_URLS_ENV, "").split():
        if url == prefix or url.startswith(prefix if prefix.endswith("/") else prefix + "/"):
            return True
    return False


def _merge_into(a: Dict[str, Any], b: Dict[str, Any], source: str) -> None:
    """Merge mapping `a` into `b`, `a`'s values winning (Detectron2's merge of a config over its base)."""
    for key, value in a.items():
        if isinstance(value, dict) and key in b:
            if not isinstance(b[key], dict):
                raise ConfigError(f"config file {source}: {key} is a mapping here but {b[key]!r} in its {BASE_KEY}")
            _merge_into(value, b[key], source)
        else:
            b[key] = value


def _is_url(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"
