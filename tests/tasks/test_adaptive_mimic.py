"""AdaptiveMimicLoss: DAT's mimic loss, hand-derived values, stop-gradient, labels, round trips."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.tasks import AdaptiveMimicLoss


def test_hand_derived_value_and_positive_only():
    # a = [[1, 0], [0, 2], [3, 3]], p = [[0, 0], [0, 1], [1, 1]]
    # squared distances per pair: 1 + 0 = 1; 0 + 1 = 1; 4 + 4 = 8.
    a = tf.constant([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    p = tf.constant([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert float(AdaptiveMimicLoss()(a, p)) == pytest.approx(10.0)          # all positive
    # labels [1, 0, 1]: the negative pair 1 (distance 1) adds nothing -> 1 + 8 = 9.
    labels = tf.constant([1.0, 0.0, 1.0])
    assert float(AdaptiveMimicLoss()(a, p, labels)) == pytest.approx(9.0)
    # The paper's form, [y a + (1 - y) p - p]^2, written out for the same batch.
    y = labels.numpy()[:, None]
    paper = np.sum((y * a.numpy() + (1 - y) * p.numpy() - p.numpy()) ** 2)
    assert float(AdaptiveMimicLoss()(a, p, labels)) == pytest.approx(paper)
    # "mean" divides by all T = 3 pairs (negatives included), as the paper's 1/T.
    assert float(AdaptiveMimicLoss("mean")(a, p, labels)) == pytest.approx(3.0)


def test_negative_pairs_add_nothing_whatever_their_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4)).astype(np.float32)
    p = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([1, 1, 0, 0, 1, 0], np.float32)
    base = float(AdaptiveMimicLoss()(a, p, labels))
    a2, p2 = a.copy(), p.copy()
    a2[labels == 0] += 100.0
    p2[labels == 0] -= 50.0
    assert float(AdaptiveMimicLoss()(a2, p2, labels)) == pytest.approx(base, rel=1e-6)
    a_var = tf.Variable(a)
    with tf.GradientTape() as tape:
        loss = AdaptiveMimicLoss()(a_var, p, labels)
    grad = tape.gradient(loss, a_var).numpy()
    np.testing.assert_array_equal(grad[labels == 0], 0.0)


def test_gradient_reaches_only_the_augmented_vector():
    a = tf.Variable([[1.0, 2.0], [0.5, -1.0]])
    p = tf.Variable([[0.0, 1.0], [1.0, 0.0]])
    with tf.GradientTape(persistent=True) as tape:
        loss = AdaptiveMimicLoss()(a, p)
    # d/da sum ||a - p||^2 = 2 (a - p); the tower output is a constant: no gradient.
    np.testing.assert_allclose(tape.gradient(loss, a).numpy(), 2 * (a.numpy() - p.numpy()))
    assert tape.gradient(loss, p) is None


def test_default_size_against_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4096, 32)).astype(np.float32)
    p = rng.normal(size=(4096, 32)).astype(np.float32)
    labels = (rng.random(4096) < 0.3).astype(np.float32)
    expected = np.sum(labels * np.sum((a.astype(np.float64) - p) ** 2, axis=1))
    assert float(AdaptiveMimicLoss()(a, p, labels)) == pytest.approx(expected, rel=1e-5)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="reduction must be one of"):
        AdaptiveMimicLoss("max")
    with pytest.raises(ValueError, match="same shape"):
        AdaptiveMimicLoss()(tf.zeros([2, 3]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match=r"\[pairs, dim\]"):
        AdaptiveMimicLoss()(tf.zeros([2]), tf.zeros([2]))
    with pytest.raises(ValueError, match="labels must be"):
        AdaptiveMimicLoss()(tf.zeros([2, 3]), tf.zeros([2, 3]), tf.zeros([2, 1]))


def test_config_and_saved_model_round_trip(tmp_path):
    layer = AdaptiveMimicLoss("mean", name="mimic")
    again = AdaptiveMimicLoss.from_config(layer.get_config())
    assert again.reduction == "mean" and again.name == "mimic"
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(restored, AdaptiveMimicLoss) and restored.reduction == "mean"

    module = tf.Module()
    module.layer = layer
    module.loss = tf.function(lambda a, p, y: layer(a, p, y), input_signature=[
        tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None, 3], tf.float32),
        tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "mimic"))
    loaded = tf.saved_model.load(str(tmp_path / "mimic"))
    rng = np.random.default_rng(2)
    a, p = rng.normal(size=(2, 5, 3)).astype(np.float32)
    y = np.array([1, 0, 1, 1, 0], np.float32)
    assert float(loaded.loss(a, p, y)) == pytest.approx(float(layer(a, p, y)), rel=1e-6)
