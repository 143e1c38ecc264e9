"""ProfileEmbedding: hand-derived values, unknown codes, order, errors, round trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import ProfileEmbedding

SIZES = {"user_occupation": 4, "user_age": 3}


def _layer():
    layer = ProfileEmbedding(SIZES, dim=2)
    layer({"user_age": tf.constant([0]), "user_occupation": tf.constant([0])})
    # Hand-set tables: row c of feature f is [10 * f_index + c, -(10 * f_index + c)].
    layer.embeddings["user_age"].set_weights([np.array([[0, 0], [1, -1], [2, -2]], np.float32)])
    layer.embeddings["user_occupation"].set_weights(
        [np.array([[0, 0], [11, -11], [12, -12], [13, -13]], np.float32) + 100])
    return layer


def test_hand_derived_values_sorted_order_and_unknown_is_zero():
    layer = _layer()
    assert layer.feature_names == ("user_age", "user_occupation")
    out = layer({"user_occupation": tf.constant([3, 0, 1], tf.int64),
                 "user_age": tf.constant([[2], [1], [0]], tf.int32)}).numpy()
    # user_age first (sorted names), then user_occupation; code 0 -> zeros although row 0 of
    # the occupation table is [100, 100].
    np.testing.assert_array_equal(out, [[2, -2, 113, 87],
                                        [1, -1, 0, 0],
                                        [0, 0, 111, 89]])


def test_bad_inputs_name_the_feature_and_the_fix():
    layer = _layer()
    with pytest.raises(ValueError, match="'user_occupation' is missing"):
        layer({"user_age": tf.constant([1])})
    with pytest.raises(TypeError, match="'user_age' must hold int codes"):
        layer({"user_age": tf.constant([1.0]), "user_occupation": tf.constant([1])})
    with pytest.raises(tf.errors.InvalidArgumentError, match="code >= its vocabulary size 4"):
        layer({"user_age": tf.constant([1]), "user_occupation": tf.constant([4])})
    with pytest.raises(tf.errors.InvalidArgumentError, match="negative code"):
        layer({"user_age": tf.constant([-1]), "user_occupation": tf.constant([1])})
    # Several codes per user would otherwise be flattened into extra rows.
    with pytest.raises(ValueError, match=r"'user_age' must be \[batch\] or \[batch, 1\]"):
        layer({"user_age": tf.constant([[1, 2]]), "user_occupation": tf.constant([[1, 2]])})
    with pytest.raises(ValueError, match="expects a dict"):
        layer(tf.constant([1]))
    with pytest.raises(ValueError, match="int >= 2"):
        ProfileEmbedding({"user_age": 1})
    with pytest.raises(ValueError, match="at least one feature"):
        ProfileEmbedding({})


def test_config_and_savedmodel_round_trip(tmp_path):
    layer = _layer()
    inputs = {"user_age": np.array([1, 2, 0], np.int64),
              "user_occupation": np.array([0, 3, 2], np.int64)}
    expected = layer(inputs).numpy()
    clone = ProfileEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(inputs).numpy(), expected)

    keras_inputs = {name: tf.keras.Input([], dtype=tf.int64, name=name) for name in SIZES}
    model = tf.keras.Model(keras_inputs, layer(keras_inputs))
    model.save(tmp_path / "profile")
    loaded = tf.keras.models.load_model(tmp_path / "profile")
    np.testing.assert_array_equal(loaded(inputs).numpy(), expected)
    raw = tf.saved_model.load(str(tmp_path / "profile")).signatures["serving_default"]
    out = raw(**{k: tf.constant(v) for k, v in inputs.items()})
    np.testing.assert_array_equal(list(out.values())[0].numpy(), expected)
