"""
YAML read as data, never as code. `parse_yaml` uses `ConfigYamlLoader`, a `yaml.SafeLoader`
that also reads the two tags configs in the wild hold as data: `!!python/tuple` (a tuple, as
`yaml.dump` writes one) and Detectron2's `!!python/object/apply:eval ["<arithmetic>"]`, computed
by `evaluate_arithmetic` (numbers and lists only). Every other tag that would build an object
(`!!python/object/apply:os.system`, `!!python/name:...`) raises ConfigError naming the file,
the line and the tag. `read_config_text` reads a file of at most MAX_YAML_BYTES as UTF-8.
"""
import yaml

from ..errors import UserError
from .arithmetic import evaluate_arithmetic

__all__ = ["ConfigError", "ConfigYamlLoader", "MAX_YAML_BYTES", "parse_yaml", "read_config_text"]

# A config is a few kilobytes; the bounds keep a device (/dev/zero), a huge file or YAML aliases
# that expand exponentially ("billion laughs") from filling memory when the config is built.
MAX_YAML_BYTES = 16 * 2**20
MAX_EXPANDED_VALUES = 1_000_000
_EVAL_TAG = "tag:yaml.org,2002:python/object/apply:eval"


class ConfigError(UserError):
    """A config file or KEY VALUE option that cannot be used; the message names the file and key."""


class ConfigYamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader plus `!!python/tuple` and arithmetic `!!python/object/apply:eval`; `source` names the file in errors."""

    source = "<string>"

    def _where(self, node) -> str:
        return f"config file {self.source}: line {node.start_mark.line + 1}"

    def construct_tuple(self, node):
        return tuple(self.construct_sequence(node, deep=True))

    def construct_eval(self, node):
        value = node.value
        if not (isinstance(node, yaml.SequenceNode) and len(value) == 1 and isinstance(value[0], yaml.ScalarNode)):
            raise ConfigError(f"{self._where(node)}: {_short(node.tag)} takes one expression in a list, e.g. !!python/object/apply:eval [\"[8, 16]\"]")
        expression = value[0].value
        try:
            return evaluate_arithmetic(expression)
        except ValueError as e:
            raise ConfigError(f"{self._where(node)}: refusing {_short(node.tag)} {_clip(expression)!r}: {e}") from None

    def refuse_tag(self, node):
        raise ConfigError(
            f"{self._where(node)}: refusing the YAML tag {_short(node.tag)}: a config holds data "
            "(numbers, strings, lists, mappings), not objects or code"
        )


ConfigYamlLoader.add_constructor("tag:yaml.org,2002:python/tuple", ConfigYamlLoader.construct_tuple)
ConfigYamlLoader.add_constructor(_EVAL_TAG, ConfigYamlLoader.construct_eval)
ConfigYamlLoader.add_constructor(None, ConfigYamlLoader.refuse_tag)


def parse_yaml(text: str, source: str):
    """The document in `text` (read from `source`), built by ConfigYamlLoader; ConfigError naming `source`."""
    loader = ConfigYamlLoader(text)
    loader.source = source
    try:
        data = loader.get_single_data()
        _expanded_size(data, {}, source)
        return data
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {source}: not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"config file {source}: nested too deeply to be a config") from None
    finally:
        loader.dispose()


def read_config_text(path: str) -> str:
    """The text of the file `path`: at most MAX_YAML_BYTES, UTF-8; ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot be read: {e.strerror or e}") from None
    return decode_config_bytes(data, path)


def decode_config_bytes(data: bytes, source: str) -> str:
    """`data` (read with a bound of MAX_YAML_BYTES + 1) as UTF-8 text; ConfigError naming `source`."""
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"config file {source}: larger than {MAX_YAML_BYTES // 2**20} MiB; a config is a few kilobytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {source}: not UTF-8 text (byte {e.start})") from None


def _expanded_size(value, sizes: dict, source: str) -> int:
    """How many values `value` holds once every alias is a copy (as the config node tree makes it)."""
    if not isinstance(value, (dict, list, tuple)):
        return 1
    known = sizes.get(id(value))
    if known is None and id(value) in sizes:
        raise ConfigError(f"config file {source}: a YAML alias refers to a node that holds it; a config is a tree")
    if known is not None:
        return known
    sizes[id(value)] = None  # being counted: meeting it again below is a cycle
    children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    total = 1 + sum(_expanded_size(child, sizes, source) for child in children)
    if total > MAX_EXPANDED_VALUES:
        raise ConfigError(f"config file {source}: its YAML aliases expand to more than {MAX_EXPANDED_VALUES} values")
    sizes[id(value)] = total
    return total


def _short(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark and problem else str(error)
    return " ".join(text.split())
