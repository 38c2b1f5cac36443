"""
`as_retinanet_plugin`, the LazyConfig one-liner (docs/lazyconfig.md): the plugin's node follows
later overrides as the zoo's did, and a zoo setting the plugin cannot express is refused in one
line naming it, never dropped. (Built models: tests/modeling/test_parity_lazyconfig.py; a training
run: tests/engine/test_lazy_zoo.py.)
"""
import pytest
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform

from retina_plugin import ConfigError
from retina_plugin.config.lazy_model import as_retinanet_plugin
from retina_plugin.errors import UserError


def zoo_model():
    return model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.py").model


def test_the_plugin_node_follows_later_overrides():
    model = as_retinanet_plugin(zoo_model())
    model.num_classes = 3
    model.head.box2box_transform.weights = [10.0, 10.0, 5.0, 5.0]
    # Built part by part (no backbone: fast): the head's classes and both transforms follow.
    assert instantiate(model.postprocess).box2box_transform.weights == [10.0, 10.0, 5.0, 5.0]
    assert model.head.num_classes == 3


def _refused(model, *words):
    with pytest.raises(ConfigError) as info:
        as_retinanet_plugin(model)
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    for word in words:
        assert word in message, message


def test_another_meta_architecture_or_head_is_refused():
    _refused(as_retinanet_plugin(zoo_model()), "model is RetinaNetPlugin, not Detectron2's RetinaNet")
    model = zoo_model()
    model.head = L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0])
    _refused(model, "model.head is Box2BoxTransform, not Detectron2's RetinaNetHead")


def test_settings_the_plugin_cannot_express_are_refused():
    model = zoo_model()
    model.head.conv_dims = [256, 128]
    _refused(model, "model.head.conv_dims = [256, 128]", "keep the input's 256 channels")
    model = zoo_model()
    model.head.input_shape = [ShapeSpec(channels=256)] * 4 + [ShapeSpec(channels=128)]
    _refused(model, "model.head.input_shape has levels of [128, 256] channels")
    model = zoo_model()
    model.head.unknown_option = 1
    _refused(model, "model.head.unknown_option = 1: RetinaNetPlugin has no counterpart of this RetinaNetHead argument")
    model = zoo_model()
    model.loss_scale = 2.0
    _refused(model, "model.loss_scale = 2.0: RetinaNetPlugin has no counterpart of this RetinaNet argument")
