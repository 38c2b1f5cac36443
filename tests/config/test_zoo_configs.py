"""
Every YAML of Detectron2's model zoo loads through `load_config` (read as data, its
`!!python/object/apply:eval` anchor sizes computed by the restricted evaluator) to the config
Detectron2's own `merge_from_file` (yaml.unsafe_load) gives, and never through fvcore's
yaml.unsafe_load fallback (which logs "Loading config ... with yaml.unsafe_load").
"""
import logging
from pathlib import Path

import pytest
from detectron2 import model_zoo

from retina_plugin.config import get_retina_plugin_cfg, load_config

ZOO = Path(model_zoo.get_config_file("Base-RetinaNet.yaml")).parent
ZOO_YAMLS = sorted(ZOO.rglob("*.yaml"))


def test_the_zoo_is_all_there():
    assert len(ZOO_YAMLS) == 92
    assert "!!python/object/apply:eval" in (ZOO / "Base-RetinaNet.yaml").read_text()


@pytest.mark.parametrize("path", ZOO_YAMLS, ids=lambda p: str(p.relative_to(ZOO)))
def test_zoo_yaml_loads_as_detectron2_loads_it(path, caplog):
    expected = get_retina_plugin_cfg()
    logging.getLogger("fvcore.common.config").disabled = True  # its unsafe_load warning, once per file
    try:
        expected.merge_from_file(str(path))
    finally:
        logging.getLogger("fvcore.common.config").disabled = False
    with caplog.at_level(logging.WARNING, logger="fvcore.common.config"):
        loaded = load_config(str(path))
    assert not [r for r in caplog.records if "unsafe_load" in r.getMessage()]
    assert loaded.dump() == expected.dump()
