"""ExpertGate: weights are distributions over experts, hand value, round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import ExpertGate


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


def test_gate_weights_are_distributions_and_mix_golden():
    gate = ExpertGate(3, seed=0)
    x = tf.random.stateless_normal([32, 5], seed=[3, 4]) * 10.0
    experts = tf.random.stateless_normal([32, 3, 4], seed=[5, 6])
    mixed, weights = gate(x, experts)
    w = weights.numpy()
    assert w.shape == (32, 3) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed.numpy(), np.einsum("be,bed->bd", w, experts.numpy()),
                               rtol=1e-5, atol=1e-6)
    # Hand value: kernel 0, bias (0, ln 3, -inf) -> weights (1/4, 3/4, 0);
    # experts (0, 0), (4, 8), (9, 9) -> mixed 3/4 * (4, 8) = (3, 6).
    gate.dense.kernel.assign(tf.zeros([5, 3]))
    gate.dense.bias.assign([0.0, np.log(3.0), -np.inf])
    mixed, weights = gate(tf.ones([1, 5]), tf.constant([[[0.0, 0.0], [4.0, 8.0], [9.0, 9.0]]]))
    np.testing.assert_allclose(weights.numpy(), [[0.25, 0.75, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(mixed.numpy(), [[3.0, 6.0]], rtol=1e-6)


def test_gate_rejects_wrong_number_of_experts():
    with pytest.raises(ValueError, match="weighs 3 experts"):
        ExpertGate(3)(tf.ones([2, 4]), tf.ones([2, 2, 5]))


def test_config_and_saved_model_roundtrip(tmp_path):
    layer = ExpertGate(3, seed=2)
    args = (tf.ones([2, 5]), tf.ones([2, 3, 4]))
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
