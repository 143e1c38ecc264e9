"""AttentionTransfer (AITM): transfer and attention against hand values, round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import AttentionTransfer


def test_attention_transfer_golden_value():
    # K = 2, W_info = I, b = 0: p = relu(q_prev) = (1, 0); q = (0, 2).
    # W_q = W_k = I: scores = (|p|^2, |q|^2) / sqrt(2) = (1, 4) / 1.41421 = (0.70711, 2.82843);
    # softmax -> w = (1, e^2.12132) / (1 + e^2.12132) = (1, 8.34215) / 9.34215
    #            = (0.107042, 0.892958).
    # W_v = 2 I: z = w_p * 2p + w_q * 2q = (0.214084, 3.571832).
    ait = AttentionTransfer(units=2)
    q, q_prev = tf.constant([[0.0, 2.0]]), tf.constant([[1.0, -3.0]])
    ait(q, q_prev)
    ait.info.kernel.assign(tf.eye(2))
    ait.info.bias.assign(tf.zeros([2]))
    ait.w_query.assign(tf.eye(2))
    ait.w_key.assign(tf.eye(2))
    ait.w_value.assign(2.0 * tf.eye(2))
    z, weights = ait(q, q_prev)
    np.testing.assert_allclose(weights.numpy(), [[0.107042, 0.892958]], rtol=1e-5)
    np.testing.assert_allclose(z.numpy(), [[0.214084, 3.571832]], rtol=1e-5)


def test_attention_transfer_info_vector_is_dense_relu_and_rejects_wrong_width():
    ait = AttentionTransfer(units=32)
    assert ait.info.units == 32 and ait.info.activation.__name__ == "relu"
    with pytest.raises(ValueError, match="must be \\[batch, 32\\]"):
        ait(tf.ones([2, 16]), tf.ones([2, 8]))


def test_config_and_saved_model_roundtrip(check_layer_roundtrips):
    check_layer_roundtrips(AttentionTransfer(units=4), (tf.ones([2, 4]), tf.ones([2, 6])))
