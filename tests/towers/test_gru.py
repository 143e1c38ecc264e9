"""GRUTower: NumPy GRU oracle, masking, config and SavedModel round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.towers.gru import GRUTower

HISTORY = np.array([[3, 1, 4, 0, 0], [2, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.int64)


def _tower(**kwargs):
    tf.keras.utils.set_random_seed(1)
    items = tf.keras.layers.Embedding(5, 3, embeddings_initializer="random_normal")
    tower = GRUTower(items, units=4, **kwargs)
    tower({"history": tf.constant(HISTORY)})
    return tower


def _numpy_gru(xs, kernel, recurrent, bias):
    """Keras GRU (reset_after=True, gates ordered z, r, h) on one unpadded sequence."""
    units = recurrent.shape[0]
    h = np.zeros(units)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for x in xs:
        xz, xr, xh = np.split(x @ kernel + bias[0], 3)
        hz, hr, hh = np.split(h @ recurrent + bias[1], 3)
        z, r = sig(xz + hz), sig(xr + hr)
        cand = np.tanh(xh + r * hh)
        h = z * h + (1 - z) * cand
    return h


def test_matches_numpy_gru_on_the_unpadded_items():
    tower = _tower()
    out = tower({"history": tf.constant(HISTORY)}).numpy()
    table = tower.item_embedding.embeddings.numpy()
    kernel, recurrent, bias = tower._gru.get_weights()
    for row, h in zip(out, HISTORY):
        expected = _numpy_gru([table[i] for i in h if i != 0], kernel, recurrent, bias)
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    # The empty history is the zero state.
    np.testing.assert_array_equal(out[2], np.zeros(4))


def test_padding_changes_nothing():
    tower = _tower()
    before = tower({"history": tf.constant(HISTORY)}).numpy()
    table = tower.item_embedding.embeddings.numpy()
    table[0] = -50.0
    tower.item_embedding.embeddings.assign(table)
    longer = np.pad(HISTORY, [(0, 0), (0, 7)])
    np.testing.assert_allclose(tower({"history": tf.constant(longer)}).numpy(), before,
                               rtol=1e-5, atol=1e-6)


def test_config_and_savedmodel_round_trip(tmp_path):
    tower = _tower(output_dim=2, unroll=True)  # unrolled: needs the fixed history width 5
    inputs = {"history": tf.constant(HISTORY)}
    expected = tower(inputs).numpy()
    assert expected.shape == (3, 2)
    clone = GRUTower.from_config(tower.get_config())
    clone(inputs)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(inputs).numpy(), expected, rtol=1e-6)

    module = tf.Module()
    module.tower = tower
    module.serve = tf.function(lambda h: tower({"history": h}),
                               input_signature=[tf.TensorSpec([None, 5], tf.int64)])
    tf.saved_model.save(module, str(tmp_path / "gru"))
    loaded = tf.saved_model.load(str(tmp_path / "gru"))
    np.testing.assert_allclose(loaded.serve(inputs["history"]).numpy(), expected, rtol=1e-6)


def test_bad_inputs():
    tower = _tower()
    with pytest.raises(ValueError, match="'history'"):
        tower(tf.constant(HISTORY))
    with pytest.raises(TypeError, match="integer"):
        tower({"history": tf.constant(HISTORY, tf.float32)})
