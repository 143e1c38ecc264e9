"""SelfAttentiveReadout: A = softmax(W2^T tanh(W1 H)) over valid positions, V = A^T H."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import SelfAttentiveReadout


def _inputs():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 7, 4)).astype(np.float32)
    mask = np.arange(7)[None, :] < np.array([7, 4, 1])[:, None]
    return h, mask


def test_matches_numpy_equations_and_masks_padding():
    h, mask = _inputs()
    layer = SelfAttentiveReadout(num_interests=3, hidden_units=5)
    out = layer(h, mask=mask).numpy()
    att = layer.attention(h, mask).numpy()
    w1, w2 = layer.w1.numpy(), layer.w2.numpy()
    for b in range(3):
        hv = h[b][mask[b]]                          # valid rows of H, [n, d]
        scores = np.tanh(hv @ w1) @ w2              # (W2^T tanh(W1 H))^T, [n, K]
        a = np.exp(scores - scores.max(0)) / np.exp(scores - scores.max(0)).sum(0)
        np.testing.assert_allclose(att[b][mask[b]], a, rtol=1e-5)
        np.testing.assert_array_equal(att[b][~mask[b]], 0.0)        # 0 on padding
        np.testing.assert_allclose(att[b].sum(0), np.ones(3), rtol=1e-6)  # sums to 1
        np.testing.assert_allclose(out[b], a.T @ hv, rtol=1e-5, atol=1e-6)
    # One valid position: every head reads exactly that row.
    np.testing.assert_allclose(out[2], np.repeat(h[2, :1], 3, axis=0), rtol=1e-6)


def test_golden_value_two_positions():
    # H = [[1, 0], [0, 1]], W1 = I (hidden 2), W2 = [[1], [0]] (one head):
    # scores = tanh(H) W2 = [tanh 1, 0] -> a = softmax = [e^t, 1]/(e^t + 1), t = tanh(1) = 0.76159
    # -> V = a^T H = [2.14168, 1] / 3.14168 = [0.681700, 0.318300].
    layer = SelfAttentiveReadout(1, hidden_units=2)
    layer.build([None, 2, 2])
    layer.set_weights([np.eye(2, dtype=np.float32), np.array([[1.0], [0.0]], np.float32)])
    out = layer(tf.constant([[[1.0, 0.0], [0.0, 1.0]]]), mask=tf.constant([[True, True]]))
    np.testing.assert_allclose(out.numpy(), [[[0.681700, 0.318300]]], atol=2e-6)


def test_padding_values_change_nothing():
    h, mask = _inputs()
    layer = SelfAttentiveReadout(2)
    ref = layer(h, mask=mask).numpy()
    garbage = np.where(mask[:, :, None], h, 1e3).astype(np.float32)
    np.testing.assert_allclose(layer(garbage, mask=mask).numpy(), ref, rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="num_interests"):
        SelfAttentiveReadout(0)
    with pytest.raises(ValueError, match=r"\[batch, length, dim\]"):
        SelfAttentiveReadout(2)(tf.zeros([2, 3]))


def test_config_and_savedmodel_round_trip(tmp_path):
    layer = SelfAttentiveReadout(2, hidden_units=6, name="sa")
    assert SelfAttentiveReadout.from_config(layer.get_config()).get_config() == layer.get_config()
    h, mask = _inputs()
    x = tf.keras.Input([7, 4])
    m = tf.keras.Input([7], dtype=tf.bool)
    model = tf.keras.Model([x, m], layer(x, mask=m))
    expected = model([h, mask]).numpy()
    model.save(tmp_path / "m")
    loaded = tf.keras.models.load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded([h, mask]).numpy(), expected, rtol=1e-6)
