"""AITM's label constraint against hand values."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.tasks import label_constraint


def test_label_constraint_hand_values():
    # max(0.5 - 0.3, 0) = 0.2, max(0.2 - 0.4, 0) = 0, max(0.9 - 0.1, 0) = 0.8:
    # 0.6 * mean(0.2, 0, 0.8) = 0.6 * 1.0 / 3 = 0.2.
    value = label_constraint(tf.constant([0.5, 0.2, 0.9]), tf.constant([0.3, 0.4, 0.1]))
    np.testing.assert_allclose(float(value), 0.2, rtol=1e-6)
    # Satisfied everywhere -> 0; weight 1 -> the plain mean violation.
    assert float(label_constraint(tf.constant([0.1]), tf.constant([0.9]))) == 0.0
    np.testing.assert_allclose(float(label_constraint(tf.constant([0.7]), tf.constant([0.2]),
                                                      weight=1.0)), 0.5, rtol=1e-6)


def test_label_constraint_gradient_only_where_violated():
    later, earlier = tf.Variable([0.5, 0.2]), tf.Variable([0.3, 0.4])
    with tf.GradientTape() as tape:
        value = label_constraint(later, earlier)
    g_later, g_earlier = tape.gradient(value, [later, earlier])
    # d/dp_later of 0.6 * (p_later - p_earlier) / 2 = 0.3 on the violated row, 0 elsewhere.
    np.testing.assert_allclose(g_later.numpy(), [0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(g_earlier.numpy(), [-0.3, 0.0], rtol=1e-6)


def test_label_constraint_validation():
    with pytest.raises(ValueError, match="weight"):
        label_constraint(tf.ones([2]), tf.ones([2]), weight=-1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        label_constraint(tf.ones([2]), tf.ones([3]))
