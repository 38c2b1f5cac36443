"""retina_plugin.config.derived.write_derived_config: a config on a _BASE_ with keys on top, read back by load_config."""
import os

import pytest

from retina_plugin import load_config
from retina_plugin.config import ConfigError
from retina_plugin.config.derived import write_derived_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NARROW = os.path.join(REPO, "configs", "scenes_narrow_R50_cpu.yaml")

VALUES = {
    "MODEL.RETINA_PLUGIN.TILE_SIZE": 256,
    "MODEL.RETINA_PLUGIN.TILE_OVERLAP": 0.29,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[15.6, 19.65, 24.76], [31.1, 39.18, 49.37]],
    "INPUT.MIN_SIZE_TRAIN": (256,),
    "MODEL.PIXEL_MEAN": [103.53, 116.28, 123.675, 120.0],
    "MODEL.PIXEL_STD": [57.375, 57.12, 58.395, 57.0],
    "OUTPUT_DIR": "out/aerial run",
}


def test_written_config_loads_with_the_values_on_its_base(tmp_path):
    path = write_derived_config(str(tmp_path / "aerial.yaml"), NARROW, VALUES, {"MODEL.RETINA_PLUGIN.TILE_SIZE": "why\nthis"},
                                header=["from the data"])
    text = open(path).read()
    assert text.startswith("# from the data\n_BASE_: ") and "    # why this\n    TILE_SIZE: 256\n" in text
    cfg, base = load_config(path), load_config(NARROW)
    assert cfg.MODEL.RETINA_PLUGIN.TILE_SIZE == 256 and cfg.MODEL.RETINA_PLUGIN.TILE_OVERLAP == 0.29
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == VALUES["MODEL.ANCHOR_GENERATOR.SIZES"]
    assert cfg.INPUT.MIN_SIZE_TRAIN == (256,) and cfg.OUTPUT_DIR == "out/aerial run"
    assert list(cfg.MODEL.PIXEL_MEAN) == VALUES["MODEL.PIXEL_MEAN"]
    # Everything else is the base's.
    assert cfg.MODEL.RETINANET.IN_FEATURES == base.MODEL.RETINANET.IN_FEATURES == ["p3", "p4"]
    assert cfg.SOLVER.BASE_LR == base.SOLVER.BASE_LR and cfg.MODEL.RESNETS.STEM_OUT_CHANNELS == 16


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "aerial.yaml"
    path.write_text("# mine\n")
    with pytest.raises(ConfigError, match=f"{path} exists; pass --force to replace it"):
        write_derived_config(str(path), NARROW, VALUES)
    assert path.read_text() == "# mine\n"
    write_derived_config(str(path), NARROW, VALUES, overwrite=True)
    assert load_config(str(path)).MODEL.RETINA_PLUGIN.TILE_SIZE == 256
    with pytest.raises(ConfigError, match="it is the config it would inherit"):
        write_derived_config(NARROW, NARROW, VALUES, overwrite=True)


def test_a_key_that_does_not_load_leaves_no_file(tmp_path):
    path = tmp_path / "bad.yaml"
    with pytest.raises(ConfigError, match=f"config file {path}: .*MODEL.NO_SUCH_KEY"):
        write_derived_config(str(path), NARROW, {"MODEL.NO_SUCH_KEY": 1})
    assert os.listdir(tmp_path) == []
