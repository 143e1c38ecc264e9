"""LabelAwareAttention: softmax(p * signed score) and the hard argmax readout."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import LabelAwareAttention

# Two interests, target t = (1, 0): scores s = (v1.t, v2.t).
INTERESTS = np.array([[[-5.0, 0.0], [1.0, 2.0]]], np.float32)  # s = (-5, 1)
TARGET = np.array([[1.0, 0.0]], np.float32)


def test_hard_readout_picks_largest_signed_dot():
    # |-5| > |1|, but the signed maximum is interest 2; pow(s, 2) would pick interest 1.
    out = LabelAwareAttention(hard=True)(INTERESTS, TARGET).numpy()
    np.testing.assert_array_equal(out, [[1.0, 2.0]])


def test_cosine_readout_picks_the_interest_that_retrieves_the_target():
    # v1 = (3, 0), v2 = (0.6, 0.8), t = (0.6, 0.8). Dots: (1.8, 1.0) -> the long v1 wins.
    # Cosines: (0.6, 1.0) -> v2 wins, the interest whose cosine retrieval ranks t first.
    interests = np.array([[[3.0, 0.0], [0.6, 0.8]]], np.float32)
    target = np.array([[0.6, 0.8]], np.float32)
    np.testing.assert_array_equal(LabelAwareAttention(hard=True)(interests, target).numpy(),
                                  [[3.0, 0.0]])
    cosine = LabelAwareAttention(hard=True, cosine=True)
    np.testing.assert_allclose(cosine.scores(interests, target).numpy(), [[0.6, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(cosine(interests, target).numpy(), [[0.6, 0.8]], rtol=1e-6)
    # Soft, p = 2: a = softmax(2 * (0.6, 1.0)) = (1, e^0.8) / (1 + e^0.8) = (0.3100255, 0.6899745);
    # the readout mixes the raw (unnormalised) interests.
    soft = LabelAwareAttention(p=2.0, cosine=True)(interests, target).numpy()
    np.testing.assert_allclose(soft, [[0.3100255 * 3 + 0.6899745 * 0.6, 0.6899745 * 0.8]],
                               rtol=1e-5)


def test_soft_attention_golden_value():
    # p = 0.5: a = softmax(0.5 * (-5, 1)) = softmax(-2.5, 0.5) = (e^-3, 1)/(1 + e^-3)
    #        = (0.0474259, 0.9525741); v = a1 * (-5, 0) + a2 * (1, 2) = (0.7154, 1.9051).
    out = LabelAwareAttention(p=0.5)(INTERESTS, TARGET).numpy()
    np.testing.assert_allclose(out, [[0.0474259 * -5 + 0.9525741, 2 * 0.9525741]], rtol=1e-5)
    # p = 0: uniform attention, the mean of the interests.
    np.testing.assert_allclose(LabelAwareAttention(p=0.0)(INTERESTS, TARGET).numpy(),
                               [[-2.0, 1.0]], rtol=1e-6)


def test_large_p_does_not_overflow_and_keeps_sign():
    rng = np.random.default_rng(0)
    interests = rng.normal(scale=30, size=(64, 4, 8)).astype(np.float32)
    target = rng.normal(scale=30, size=(64, 8)).astype(np.float32)
    soft = LabelAwareAttention(p=100.0).attention(interests, target).numpy()
    assert np.isfinite(soft).all()
    np.testing.assert_array_equal(soft.argmax(1), np.einsum("bkd,bd->bk", interests, target).argmax(1))


def test_inactive_interests_get_no_weight():
    mask = np.array([[True, False]])
    for layer in (LabelAwareAttention(p=0.0), LabelAwareAttention(p=3.0),
                  LabelAwareAttention(hard=True)):
        np.testing.assert_allclose(layer(INTERESTS, TARGET, mask).numpy(), [[-5.0, 0.0]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="hard=True"):
        LabelAwareAttention(p=float("inf"))
    with pytest.raises(ValueError, match="p must be"):
        LabelAwareAttention(p=-1.0)
    with pytest.raises(ValueError, match=r"\[batch, num_interests, dim\]"):
        LabelAwareAttention()(tf.zeros([2, 3]), tf.zeros([2, 3]))


def test_config_and_savedmodel_round_trip(tmp_path):
    layer = LabelAwareAttention(p=2.0, name="la")
    assert LabelAwareAttention.from_config(layer.get_config()).get_config() == layer.get_config()
    cosine = LabelAwareAttention(hard=True, cosine=True)
    assert LabelAwareAttention.from_config(cosine.get_config()).cosine
    v = tf.keras.Input([2, 2])
    t = tf.keras.Input([2])
    model = tf.keras.Model([v, t], layer(v, t))
    expected = model([INTERESTS, TARGET]).numpy()
    model.save(tmp_path / "m")
    loaded = tf.keras.models.load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded([INTERESTS, TARGET]).numpy(), expected, rtol=1e-6)
