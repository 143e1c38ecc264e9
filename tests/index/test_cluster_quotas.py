"""Divide-and-conquer quotas: sum to M, alpha=0 equal, larger alpha concentrates, NumPy == TF."""

import numpy as np
import pytest
import tensorflow as tf

from towerkit.index.cluster_quotas import cluster_quotas, cluster_quotas_tf


def test_hand_derived_quotas():
    # p = (.5, .3, .2), M = 10, alpha = 1: shares 5, 3, 2 exactly.
    np.testing.assert_array_equal(cluster_quotas([[0.5, 0.3, 0.2]], 10, 1.0), [[5, 3, 2]])
    # alpha = 0: shares 10/3 each -> floors 3, 3, 3, one left; equal fractions -> lowest index.
    np.testing.assert_array_equal(cluster_quotas([[0.5, 0.3, 0.2]], 10, 0.0), [[4, 3, 3]])
    # alpha = 2: weights .25, .09, .04 (sum .38) -> shares 6.58, 2.37, 1.05 -> floors 6, 2, 1,
    # one left -> largest fraction .58 (cluster 0).
    np.testing.assert_array_equal(cluster_quotas([[0.5, 0.3, 0.2]], 10, 2.0), [[7, 2, 1]])
    # Capacity: cluster 0 holds 3 (share 7 > 3) -> 3; the other 7 go .2 : .1 -> 4.67, 2.33 ->
    # 4, 2 plus the one left to the larger fraction -> 5, 2.
    np.testing.assert_array_equal(cluster_quotas([[0.7, 0.2, 0.1]], 10, 1.0, [3, 10, 10]),
                                  [[3, 5, 2]])
    # Zero intent: cluster 0 full at 3, the rest is shared equally by clusters 1, 2 (3.5 each,
    # tie -> lower index).
    np.testing.assert_array_equal(cluster_quotas([[1.0, 0.0, 0.0]], 10, 1.0, [3, 4, 10]),
                                  [[3, 4, 3]])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.0, 8.0, 200.0])
def test_sum_to_m_within_capacity_and_tf_equal(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    p = rng.dirichlet(np.full(18, 0.3), size=400).astype(np.float32)
    p[:20, 3] = 0.0
    capacity = rng.integers(0, 30, 18)
    capacity[0] = 60  # sum >= M always
    q = cluster_quotas(p, 50, alpha, capacity)
    assert q.shape == (400, 18)
    np.testing.assert_array_equal(q.sum(axis=1), 50)
    assert (q >= 0).all() and (q <= capacity).all()
    np.testing.assert_array_equal(
        cluster_quotas_tf(tf.constant(p), 50, alpha, capacity).numpy(), q)
    # Default sizes: M = 50 over 18 MovieLens genre clusters without caps.
    q = cluster_quotas(p, 50, alpha)
    np.testing.assert_array_equal(q.sum(axis=1), 50)
    np.testing.assert_array_equal(
        cluster_quotas_tf(tf.constant(p), 50, alpha, np.full(18, 50)).numpy(), q)


def test_alpha_zero_is_equal_and_large_alpha_concentrates():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=100)
    q0 = cluster_quotas(p, 50, 0.0)
    np.testing.assert_array_equal(q0, 10)
    top = p.argmax(axis=1)
    shares = [np.take_along_axis(cluster_quotas(p, 50, a), top[:, None], 1).mean()
              for a in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(b >= a for a, b in zip(shares, shares[1:])), shares
    # A clear favourite (p = .6 vs .1 each): ratio 6 ** alpha, all 50 go to it at alpha = 20.
    p = np.array([[0.1, 0.1, 0.6, 0.1, 0.1]])
    np.testing.assert_array_equal(cluster_quotas(p, 50, 20.0), [[0, 0, 50, 0, 0]])
    np.testing.assert_array_equal(cluster_quotas(p, 50, 1.0), [[5, 5, 30, 5, 5]])


def test_bad_inputs():
    with pytest.raises(ValueError, match="alpha"):
        cluster_quotas([[0.5, 0.5]], 4, -1.0)
    with pytest.raises(ValueError, match="fewer than M"):
        cluster_quotas([[0.5, 0.5]], 10, 1.0, [3, 4])
    with pytest.raises(ValueError, match="probabilities"):
        cluster_quotas([[0.5, -0.5]], 4, 1.0)
    with pytest.raises(ValueError, match="positive int"):
        cluster_quotas([[0.5, 0.5]], 0, 1.0)
    with pytest.raises(ValueError, match=r"\[batch, num_clusters\]"):
        cluster_quotas([0.5, 0.5], 4, 1.0)
