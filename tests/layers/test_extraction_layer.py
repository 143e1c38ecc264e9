"""ExtractionLayer (a CGC/PLE level): shared gate only below the last level, hand value,
round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import ExtractionLayer


def _saved_model_roundtrip(layer, inputs, tmp_path):
    """Saves `layer` inside a tf.Module with a traced call, reloads, returns both outputs."""
    specs = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype), inputs)
    module = tf.Module()
    module.layer = layer
    module.f = tf.function(lambda *args: layer(*args), input_signature=specs)
    expected = module.f(*inputs)
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    return expected, loaded.f(*inputs)


def _assert_structures_close(a, b):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


def test_extraction_layer_shapes_and_shared_gate_only_when_not_final():
    x = tf.random.stateless_normal([8, 6], seed=[1, 1])
    final = ExtractionLayer(2, 1, 2, [5], final=True, seed=1)
    outputs, gates = final([x, x, x])
    assert [o.shape for o in outputs] == [(8, 5), (8, 5)]
    assert [g.shape for g in gates] == [(8, 3), (8, 3)]
    assert final.shared_gate is None
    lower = ExtractionLayer(2, 1, 2, [5], final=False, seed=1)
    outputs, gates = lower([x, x, x])
    assert len(outputs) == 3 and gates[-1].shape == (8, 2 * 1 + 2)
    for g in gates:
        np.testing.assert_allclose(g.numpy().sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="takes 3 inputs"):
        final([x, x])


def test_extraction_layer_golden_value():
    # One task, one task expert, one shared expert, width 1, kernels set by hand:
    # task expert relu(2x) = 2, shared expert relu(3x) = 3 for x = 1; gate logits (0, 0) ->
    # weights (1/2, 1/2) -> output 2.5.
    layer = ExtractionLayer(1, 1, 1, [1], final=True)
    x = tf.ones([1, 1])
    layer([x, x])
    layer.task_experts[0].experts[0][0].kernel.assign([[2.0]])
    layer.shared_experts.experts[0][0].kernel.assign([[3.0]])
    layer.task_gates[0].dense.kernel.assign(tf.zeros([1, 2]))
    outputs, gates = layer([x, x])
    np.testing.assert_allclose(outputs[0].numpy(), [[2.5]], rtol=1e-6)
    np.testing.assert_allclose(gates[0].numpy(), [[0.5, 0.5]], rtol=1e-6)


def test_config_and_saved_model_roundtrip(tmp_path):
    layer = ExtractionLayer(2, 1, 1, [4], final=False, seed=3)
    args = ([tf.ones([2, 5])] * 3,)
    expected = layer(*args)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(*args)
    clone.set_weights(layer.get_weights())
    _assert_structures_close(expected, clone(*args))
    revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(revived) is type(layer)
    before, after = _saved_model_roundtrip(layer, args, tmp_path)
    _assert_structures_close(before, after)
    _assert_structures_close(expected, after)
