"""Shared checks for the layer tests: config and SavedModel round trips with equal outputs."""

import towerkit  # noqa: F401  (first: legacy Keras)
import numpy as np
import pytest
import tensorflow as tf


def _assert_structures_close(a, b):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


@pytest.fixture
def check_layer_roundtrips(tmp_path):
    """`check(layer, args)`: `from_config` and Keras (de)serialisation give the same layer and,
    with its weights, the same outputs on `args`; a SavedModel of the traced call reloads and
    answers the same."""

    def check(layer, args):
        expected = layer(*args)
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        clone(*args)
        clone.set_weights(layer.get_weights())
        _assert_structures_close(expected, clone(*args))
        revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
        assert type(revived) is type(layer)
        specs = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype), args)
        module = tf.Module()
        module.layer = layer
        module.f = tf.function(lambda *a: layer(*a), input_signature=specs)
        before = module.f(*args)
        tf.saved_model.save(module, str(tmp_path / "roundtrip"))
        loaded = tf.saved_model.load(str(tmp_path / "roundtrip"))  # kept: owns the variables
        after = loaded.f(*args)
        _assert_structures_close(before, after)
        _assert_structures_close(expected, after)

    return check
