"""thresholds.yaml: written by the analysis, validated by load_class_thresholds."""
import pytest

from retina_plugin.analysis.detections import load_class_thresholds, write_class_thresholds
from retina_plugin.errors import InputFileError

NAMES = ["cat", "dog", "sea lion"]


def test_round_trip(tmp_path):
    path = write_class_thresholds(str(tmp_path / "t.yaml"), NAMES, [0.85, 0.7, 1.0], "a header\nof two lines")
    text = open(path).read()
    assert text.startswith("# a header\n# of two lines\n")
    assert load_class_thresholds(path, NAMES) == [0.85, 0.7, 1.0]
    assert load_class_thresholds(path, list(reversed(NAMES))) == [1.0, 0.7, 0.85]


@pytest.mark.parametrize(
    "text, words",
    [
        ("cat: 0.5\ndog: 0.5\n", ["no threshold", "'sea lion'"]),
        ("cat: 0.5\ndog: 0.5\nsea lion: 0.5\nhorse: 0.2\n", ["'horse'", "not a class"]),
        ("cat: 1.5\ndog: 0.5\nsea lion: 0.5\n", ["'cat'", "[0, 1]", "1.5"]),
        ("cat: yes\ndog: 0.5\nsea lion: 0.5\n", ["'cat'", "True"]),
        ("cat: high\ndog: 0.5\nsea lion: 0.5\n", ["'cat'", "'high'"]),
        ("- 0.5\n- 0.6\n", ["mapping", "list"]),
        ("cat: [0.5\n", ["not a YAML file"]),
    ],
)
def test_bad_files_name_the_file_and_entry(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputFileError) as e:
        load_class_thresholds(str(path), NAMES)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="cannot read"):
        load_class_thresholds(str(tmp_path / "none.yaml"), NAMES)
