"""Experts: independent initialisation, golden value, validation, round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import Experts


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


def test_experts_differ_at_initialisation_seeded_and_unseeded():
    x = tf.random.stateless_normal([16, 10], seed=[1, 2])
    for seed in (None, 7):
        experts = Experts(4, [8, 6], seed=seed)
        out = experts(x).numpy()
        assert out.shape == (16, 4, 6)
        kernels = [layers[0].kernel.numpy() for layers in experts.experts]
        for i in range(4):
            for j in range(i + 1, 4):
                assert not np.allclose(kernels[i], kernels[j]), (seed, i, j)
                assert not np.allclose(out[:, i], out[:, j]), (seed, i, j)


def test_experts_with_the_same_seed_are_reproducible():
    x = tf.ones([2, 3])
    np.testing.assert_array_equal(Experts(2, [4], seed=3)(x).numpy(),
                                  Experts(2, [4], seed=3)(x).numpy())


def test_experts_golden_value():
    # One expert, one ReLU layer: relu(x W + b) with W = [[1, -1], [2, 0]], b = 0.
    # x = (1, 1): (1 + 2, -1 + 0) -> relu -> (3, 0).
    experts = Experts(1, [2])
    experts(tf.zeros([1, 2]))
    experts.experts[0][0].kernel.assign([[1.0, -1.0], [2.0, 0.0]])
    np.testing.assert_allclose(experts(tf.constant([[1.0, 1.0]])).numpy(), [[[3.0, 0.0]]])


def test_experts_validation():
    with pytest.raises(ValueError, match="num_experts"):
        Experts(0, [4])
    with pytest.raises(ValueError, match="layer_sizes"):
        Experts(2, [])


def test_config_and_saved_model_roundtrip(tmp_path):
    layer = Experts(3, [4, 2], seed=1)
    args = (tf.ones([2, 5]),)
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
