"""MODEL.RETINA_PLUGIN.COMPILE: torch.compile of backbone and head at inference, eager in training."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from retina_plugin.compare import compare_detections
from retina_plugin.config import ConfigError, load_config

from tool_runs import BASE_CONFIG, REPO, SMALL_MODEL_OPTS

pytestmark = pytest.mark.usefixtures("single_thread")

# A narrow R18-FPN whose random head scores ~0.5 everywhere (PRIOR_PROB 0.5): hundreds of detections.
NARROW_OPTS = [
    *SMALL_MODEL_OPTS,
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.RETINANET.NUM_CONVS", "1",
    "MODEL.RETINANET.PRIOR_PROB", "0.5",
    "MODEL.RETINA_PLUGIN.COMPILE", "True",
]  # fmt: skip


def narrow_cfg(*opts):
    return load_config(str(REPO / BASE_CONFIG), [*NARROW_OPTS, *opts])


@pytest.mark.slow  # compiling takes 15-90 s on one thread, cold
def test_compiled_detections_equal_eager():
    model = build_model(narrow_cfg()).eval()
    assert model.compile_inference
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        compiled = model([{"image": image}])[0]["instances"]
        assert model._compiled is not None
        model.compile_inference = False
        eager = model([{"image": image}])[0]["instances"]
    assert len(eager) > 10
    result = compare_detections(compiled, eager, min_iou=0.999, score_atol=1e-4)
    assert result["match"], result
    assert result["matched"] == len(eager) == len(compiled)
    assert (compiled.pred_boxes.tensor - eager.pred_boxes.tensor).abs().max() <= 1e-4
    assert (compiled.scores - eager.scores).abs().max() <= 1e-4


def test_training_runs_eager_and_drops_the_compiled_modules(make_batch):
    model = build_model(narrow_cfg())
    model._compiled = (model.backbone, model.head)  # as after an eval forward
    model.train()
    assert model._compiled is None  # the next eval forward compiles the trained weights
    with EventStorage():
        model(make_batch(counts=(2,), sizes=((96, 128),)))
    assert model._compiled is None


def test_compile_needs_float32():
    with pytest.raises(ConfigError, match="MODEL.RETINA_PLUGIN.COMPILE"):
        narrow_cfg("MODEL.RETINA_PLUGIN.INFERENCE_DTYPE", "bfloat16")


def test_export_traces_the_eager_modules_and_copies_drop_the_compiled_ones(tmp_path):
    import copy

    from retina_plugin.deploy.export import export_model
    from retina_plugin.deploy.exported import run_exported

    model = build_model(narrow_cfg()).eval()
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    path = export_model(model, image, str(tmp_path), "torchscript")
    assert model._compiled is None  # the trace did not compile
    model.compile_inference = False
    with torch.no_grad():
        eager = model([{"image": image}])[0]["instances"]
    boxes, scores, classes = run_exported(path, image)
    assert len(eager) > 10
    assert compare_detections((boxes, scores, classes), eager, min_iou=0.999, score_atol=1e-5)["match"]
    # A copy never holds the original's compiled wrappers (they would run the original's weights).
    model._compiled = (model.backbone, model.head)
    copied = copy.deepcopy(model)
    assert copied._compiled is None and model._compiled is not None
