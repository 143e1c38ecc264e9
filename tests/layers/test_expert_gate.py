"""ExpertGate: weights are distributions over experts, hand value, round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import ExpertGate


def test_gate_weights_are_distributions_and_mix_golden():
    gate = ExpertGate(3, seed=0)
    x = tf.random.stateless_normal([32, 5], seed=[3, 4]) * 10.0
    experts = tf.random.stateless_normal([32, 3, 4], seed=[5, 6])
    mixed, weights = gate(x, experts)
    w = weights.numpy()
    assert w.shape == (32, 3) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed.numpy(), np.einsum("be,bed->bd", w, experts.numpy()),
                               rtol=1e-5, atol=1e-6)
    # Hand value: kernel 0, bias (0, ln 3, -inf) -> weights (1/4, 3/4, 0);
    # experts (0, 0), (4, 8), (9, 9) -> mixed 3/4 * (4, 8) = (3, 6).
    gate.dense.kernel.assign(tf.zeros([5, 3]))
    gate.dense.bias.assign([0.0, np.log(3.0), -np.inf])
    mixed, weights = gate(tf.ones([1, 5]), tf.constant([[[0.0, 0.0], [4.0, 8.0], [9.0, 9.0]]]))
    np.testing.assert_allclose(weights.numpy(), [[0.25, 0.75, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(mixed.numpy(), [[3.0, 6.0]], rtol=1e-6)


def test_gate_rejects_wrong_number_of_experts():
    with pytest.raises(ValueError, match="weighs 3 experts"):
        ExpertGate(3)(tf.ones([2, 4]), tf.ones([2, 2, 5]))


def test_config_and_saved_model_roundtrip(check_layer_roundtrips):
    check_layer_roundtrips(ExpertGate(3, seed=2), (tf.ones([2, 5]), tf.ones([2, 3, 4])))
