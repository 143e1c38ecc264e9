"""Experts: independent initialisation, golden value, validation, round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import Experts


def test_experts_differ_at_initialisation_seeded_and_unseeded():
    x = tf.random.stateless_normal([16, 10], seed=[1, 2])
    for seed in (None, 7):
        experts = Experts(4, [8, 6], seed=seed)
        out = experts(x).numpy()
        assert out.shape == (16, 4, 6)
        kernels = [layers[0].kernel.numpy() for layers in experts.experts]
        for i in range(4):
            for j in range(i + 1, 4):
                assert not np.allclose(kernels[i], kernels[j]), (seed, i, j)
                assert not np.allclose(out[:, i], out[:, j]), (seed, i, j)


def test_experts_with_the_same_seed_are_reproducible():
    x = tf.ones([2, 3])
    np.testing.assert_array_equal(Experts(2, [4], seed=3)(x).numpy(),
                                  Experts(2, [4], seed=3)(x).numpy())


def test_experts_golden_value():
    # One expert, one ReLU layer: relu(x W + b) with W = [[1, -1], [2, 0]], b = 0.
    # x = (1, 1): (1 + 2, -1 + 0) -> relu -> (3, 0).
    experts = Experts(1, [2])
    experts(tf.zeros([1, 2]))
    experts.experts[0][0].kernel.assign([[1.0, -1.0], [2.0, 0.0]])
    np.testing.assert_allclose(experts(tf.constant([[1.0, 1.0]])).numpy(), [[[3.0, 0.0]]])


def test_experts_validation():
    with pytest.raises(ValueError, match="num_experts"):
        Experts(0, [4])
    with pytest.raises(ValueError, match="layer_sizes"):
        Experts(2, [])


def test_config_and_saved_model_roundtrip(check_layer_roundtrips):
    check_layer_roundtrips(Experts(3, [4, 2], seed=1), (tf.ones([2, 5]),))
