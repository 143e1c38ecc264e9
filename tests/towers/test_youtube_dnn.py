"""YouTubeDNN: NumPy oracle, masking, example age, config and SavedModel round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.towers.youtube_dnn import YouTubeDNN, masked_mean

HISTORY = np.array([[3, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]], dtype=np.int64)


def _tower(**kwargs):
    tf.keras.utils.set_random_seed(0)
    items = tf.keras.layers.Embedding(5, 3, embeddings_initializer="random_normal")
    side = {"user_age": tf.keras.layers.Embedding(4, 2, embeddings_initializer="random_normal")}
    return YouTubeDNN(items, hidden_units=(6,), output_dim=4, side_embeddings=side, **kwargs)


def _inputs():
    return {"history": tf.constant(HISTORY), "user_age": tf.constant([1, 3, 0], tf.int64),
            "example_age": tf.constant([0.5, 0.0, 1.0])}


def test_masked_mean_golden():
    # Row 0: mean of rows for ids 2 and 1 ([2, 0] and [0, 4]) = [1, 2]; id 0's row [9, 9] ignored.
    # Row 1: all padding -> zeros.
    emb = tf.constant([[[2.0, 0.0], [0.0, 4.0], [9.0, 9.0]], [[9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]])
    ids = tf.constant([[2, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(masked_mean(emb, ids).numpy(), [[1.0, 2.0], [0.0, 0.0]])


def test_matches_numpy_oracle():
    tower = _tower()
    out = tower(_inputs()).numpy()
    items = tower.item_embedding.embeddings.numpy()
    ages = tower.side_embeddings["user_age"].embeddings.numpy()
    w1, b1 = tower._hidden[0].get_weights()
    w2, b2 = tower._output.get_weights()
    rows = []
    for h, a, t in zip(HISTORY, [1, 3, 0], [0.5, 0.0, 1.0]):
        watched = [items[i] for i in h if i != 0]
        pooled = np.mean(watched, axis=0) if watched else np.zeros(3)
        side = ages[a] if a != 0 else np.zeros(2)
        x = np.concatenate([pooled, side, [t]])
        rows.append(np.maximum(x @ w1 + b1, 0) @ w2 + b2)
    np.testing.assert_allclose(out, np.array(rows), rtol=1e-5, atol=1e-6)


def test_padding_changes_nothing():
    tower = _tower()
    before = tower(_inputs()).numpy()
    # Overwrite the padding row of both tables: padded positions must not matter.
    table = tower.item_embedding.embeddings.numpy()
    table[0] = 100.0
    tower.item_embedding.embeddings.assign(table)
    np.testing.assert_allclose(tower(_inputs()).numpy(), before, rtol=1e-6)
    # A longer window with more padding gives the same vector.
    longer = dict(_inputs(), history=tf.constant(np.pad(HISTORY, [(0, 0), (0, 6)])))
    np.testing.assert_allclose(tower(longer).numpy(), before, rtol=1e-6)


def test_example_age_defaults_to_zero_at_serving():
    tower = _tower()
    serving = {k: v for k, v in _inputs().items() if k != "example_age"}
    zero = dict(_inputs(), example_age=tf.zeros([3]))
    np.testing.assert_allclose(tower(serving).numpy(), tower(zero).numpy())
    assert not np.allclose(tower(_inputs()).numpy()[0], tower(zero).numpy()[0])


def test_config_round_trip():
    tower = _tower(dropout=0.1)
    out = tower(_inputs()).numpy()
    clone = YouTubeDNN.from_config(tower.get_config())
    clone(_inputs())
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(_inputs()).numpy(), out, rtol=1e-6)
    assert clone.get_config()["hidden_units"] == [6]
    assert clone.side_embeddings["user_age"].input_dim == 4


def test_savedmodel_round_trip(tmp_path):
    tower = _tower()
    expected = tower(_inputs()).numpy()
    module = tf.Module()
    module.tower = tower
    module.serve = tf.function(lambda h, a, t: tower({"history": h, "user_age": a,
                                                      "example_age": t}),
                               input_signature=[tf.TensorSpec([None, None], tf.int64),
                                                tf.TensorSpec([None], tf.int64),
                                                tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    got = loaded.serve(*[_inputs()[k] for k in ("history", "user_age", "example_age")])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_bad_inputs():
    tower = _tower()
    with pytest.raises(ValueError, match="'history'"):
        tower({"items": tf.constant(HISTORY)})
    with pytest.raises(TypeError, match="integer item indices"):
        tower(dict(_inputs(), history=tf.constant(HISTORY, tf.float32)))
    with pytest.raises(ValueError, match="user_age"):
        tower({"history": tf.constant(HISTORY)})
    with pytest.raises(TypeError, match="Embedding"):
        YouTubeDNN(tf.keras.layers.Dense(3))
    with pytest.raises(ValueError, match="output_dim"):
        YouTubeDNN(tf.keras.layers.Embedding(5, 3), output_dim=0)
