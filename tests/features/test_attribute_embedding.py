"""AttributeEmbedding: id -> stored codes -> mean of their embeddings (+ the id's own)."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.features import AttributeEmbedding


def _layer(id_dim=0):
    return AttributeEmbedding(["a", "b"], [[1, 3], [2]], num_codes=4, dim=2, id_dim=id_dim)


def test_golden_value_mean_of_codes_unknown_is_zero():
    layer = _layer()
    layer(tf.constant(["a"]))
    # Table rows: code 0 (padding), 1 -> (1, 0), 2 -> (0, 5), 3 -> (3, 2).
    layer.embedding.embeddings.assign([[9.0, 9.0], [1.0, 0.0], [0.0, 5.0], [3.0, 2.0]])
    out = layer(tf.constant([["a", "b", "zzz"]])).numpy()
    # "a": mean((1, 0), (3, 2)) = (2, 1); "b": (0, 5); unknown: zeros (padding never counted).
    np.testing.assert_allclose(out, [[[2.0, 1.0], [0.0, 5.0], [0.0, 0.0]]])


def test_id_embedding_is_concatenated_first():
    layer = _layer(id_dim=3)
    out = layer(tf.constant(["a", "b"]))
    assert out.shape == (2, 5)
    rows = layer.lookup(tf.constant(["a", "b"])).numpy()
    np.testing.assert_allclose(out[:, :3], layer.id_embedding.embeddings.numpy()[rows])


def test_validation():
    with pytest.raises(ValueError, match="unique"):
        AttributeEmbedding(["a", "a"], [[1], [1]], num_codes=2)
    with pytest.raises(ValueError, match=r"must lie in \[1, num_codes=2\)"):
        AttributeEmbedding(["a"], [[2]], num_codes=2)
    with pytest.raises(TypeError, match="string ids"):
        _layer()(tf.constant([1]))


def test_config_and_saved_model_roundtrip(tmp_path):
    layer = _layer(id_dim=2)
    ids = tf.constant([["a", "x"], ["b", "a"]])
    expected = layer(ids).numpy()
    clone = AttributeEmbedding.from_config(layer.get_config())
    clone(ids)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(ids).numpy(), expected)
    module = tf.Module()
    module.layer = layer
    module.f = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.string)])
    module.f(ids)
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.f(ids).numpy(), expected)
