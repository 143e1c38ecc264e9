"""`cluster_quotas`: how many of a user's `M` results each cluster contributes (NumPy and TF).

Divide-and-conquer retrieval (Zhang et al., WWW 2023) gives cluster `k` the quota

    M_k = M * p_uk ** alpha / sum_k' p_uk' ** alpha,

where `p_u` is the user-intent distribution over the `K` clusters. `alpha = 0` gives equal
quotas, `alpha = 1` quotas proportional to the intent, and a large `alpha` puts everything on
the likeliest cluster. The paper leaves rounding and small clusters open; here:

* Integers summing to exactly `M`: largest-remainder rounding (Hamilton's method): every
  cluster gets `floor(x_k)` of its real share `x_k`, and the `M - sum floor(x_k)` left over go
  one each to the clusters with the largest fractional parts `x_k - floor(x_k)`; ties go to the
  lower cluster index.
* Capacities: a cluster cannot return more items than it holds (`capacity[k]`, its size). A
  cluster whose share reaches its capacity is given exactly its capacity, and the remaining
  budget is shared again, by the same formula, among the other clusters (repeated until no
  share exceeds a capacity: water-filling). Rounding comes last, so no quota exceeds its
  capacity (`floor(x) + 1 <= capacity` whenever `x < capacity`).
* Weights are computed as `exp(alpha * (log p_uk - max_k log p_uk))` (the same ratios, no
  underflow for large `alpha`). A cluster with `p_uk = 0` and `alpha > 0` has weight 0: it
  gets items only when the clusters with weight > 0 are all full, and then the budget left is
  shared equally among the clusters that still have room.

Both versions compute in float64, round the real shares to multiples of 2**-30 (so that
last-bit differences between NumPy's and TF's `exp` cannot flip a rounding) and agree exactly
(tested on random inputs); the TF one is what the exported SavedModel runs
(`towerkit.index.ClusteredIndex`) and what the `mt_ebr` recipe evaluates with.

References:
  Zhang et al., "Divide and Conquer: Towards Better Embedding-based Retrieval for Recommender
  Systems From a Multi-task Perspective", WWW 2023, https://arxiv.org/abs/2302.02657.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["cluster_quotas", "cluster_quotas_tf"]

#: Shares are rounded to multiples of 1/_GRID before the floor and the remainder ranking, so
#: that last-bit differences between NumPy's and TF's `exp`/`log` cannot flip a rounding.
_GRID = 2.0 ** 30


def _check(intent, m, alpha, capacity) -> tuple:
    p = np.asarray(intent, np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"intent must be [batch, num_clusters], got shape {p.shape}.")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("intent must hold finite probabilities >= 0 (a softmax over clusters).")
    if (p.sum(axis=1) <= 0).any():
        raise ValueError("every intent row needs a positive entry (all-zero rows have no "
                         "likeliest cluster).")
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"M (the list length) must be a positive int, got {m!r}.")
    if isinstance(alpha, bool) or not np.isscalar(alpha) or not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite float >= 0, got {alpha!r}.")
    cap = (np.full(p.shape[1], m, np.int64) if capacity is None
           else np.asarray(capacity, np.int64))
    if cap.shape != (p.shape[1],) or (cap < 0).any():
        raise ValueError(f"capacity must be [num_clusters={p.shape[1]}] ints >= 0, got "
                         f"{np.asarray(capacity)!r}.")
    if cap.sum() < m:
        raise ValueError(f"the clusters hold {int(cap.sum())} items in all, fewer than M={m}: "
                         "ask for a shorter list.")
    return p, int(m), float(alpha), cap


def cluster_quotas(intent, m: int, alpha: float, capacity=None) -> np.ndarray:
    """Per-cluster quotas `M_k ~ p_uk ** alpha`, integers summing exactly to `m` (NumPy).

    Args:
      intent: float `[batch, K]`, the user-intent distribution `p_u` (rows need not be
        normalised; only ratios matter).
      m: int. The list length `M`.
      alpha: float >= 0. 0 = equal quotas; larger concentrates on the likeliest clusters.
      capacity: int `[K]` or None. Items each cluster holds (no limit when None).

    Returns:
      int64 `[batch, K]`, each row summing to `m`, `0 <= quota <= capacity`.

    Raises:
      ValueError: bad shapes, negative or non-finite intents, `alpha < 0`, `m < 1`, or
        clusters holding fewer than `m` items in all.

    Example:
      >>> cluster_quotas([[0.5, 0.3, 0.2]], m=10, alpha=1.0)
      array([[5, 3, 2]])
    """
    p, m, alpha, cap = _check(intent, m, alpha, capacity)
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    if alpha == 0:
        w = np.ones_like(p)
    else:
        w = np.exp(alpha * (logp - logp.max(axis=1, keepdims=True)))
    capf = cap.astype(np.float64)[None, :]
    full = np.zeros(p.shape, bool)
    for _ in range(p.shape[1]):
        budget = m - np.where(full, capf, 0.0).sum(axis=1, keepdims=True)
        open_w = np.where(full, 0.0, w)
        total = open_w.sum(axis=1, keepdims=True)
        # Only zero-weight clusters have room left: share the rest equally among them.
        open_w = np.where(total > 0, open_w, np.where(full, 0.0, 1.0))
        total = open_w.sum(axis=1, keepdims=True)
        share = budget * open_w / np.maximum(total, 1e-300)
        full = full | (~full & (share >= capf))
    budget = m - np.where(full, capf, 0.0).sum(axis=1, keepdims=True)
    open_w = np.where(full, 0.0, w)
    total = open_w.sum(axis=1, keepdims=True)
    open_w = np.where(total > 0, open_w, np.where(full, 0.0, 1.0))
    total = open_w.sum(axis=1, keepdims=True)
    share = np.where(full, 0.0, budget * open_w / np.maximum(total, 1e-300))
    share = np.round(share * _GRID) / _GRID
    base = np.floor(share)
    frac = np.where(full, -1.0, share - base)
    left = (m - np.where(full, capf, base).sum(axis=1)).round().astype(np.int64)
    order = np.argsort(-frac, axis=1, kind="stable")       # ties: lower cluster index first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(p.shape[1])[None, :].repeat(len(p), 0), axis=1)
    bonus = rank < left[:, None]
    return np.where(full, capf, base + bonus).astype(np.int64)


def cluster_quotas_tf(intent: tf.Tensor, m, alpha: float, capacity) -> tf.Tensor:
    """`cluster_quotas` in TensorFlow ops (graph-safe; what the exported model runs).

    Args:
      intent: float `[batch, K]` tensor (K static).
      m: int or int32 scalar tensor. The list length.
      alpha: float >= 0 (a Python number, fixed in the graph).
      capacity: int `[K]` (NumPy or a list). Items each cluster holds.

    Returns:
      int32 `[batch, K]`, equal to `cluster_quotas(intent, m, alpha, capacity)`.
    """
    if isinstance(alpha, bool) or not np.isscalar(alpha) or not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite float >= 0, got {alpha!r}.")
    p = tf.cast(intent, tf.float64)
    num_clusters = p.shape[-1]
    if num_clusters is None:
        raise ValueError("intent needs a static number of clusters [batch, K].")
    capf = tf.constant(np.asarray(capacity, np.float64)[None, :])
    mf = tf.cast(m, tf.float64)
    if float(alpha) == 0.0:
        w = tf.ones_like(p)
    else:
        logp = tf.math.log(p)
        w = tf.exp(float(alpha) * (logp - tf.reduce_max(logp, axis=1, keepdims=True)))
    zeros, ones = tf.zeros_like(p), tf.ones_like(p)

    def shares(full):
        budget = mf - tf.reduce_sum(tf.where(full, capf + zeros, zeros), axis=1, keepdims=True)
        open_w = tf.where(full, zeros, w)
        total = tf.reduce_sum(open_w, axis=1, keepdims=True)
        open_w = tf.where(total > 0, open_w, tf.where(full, zeros, ones))
        total = tf.reduce_sum(open_w, axis=1, keepdims=True)
        return budget * open_w / tf.maximum(total, 1e-300)

    full = tf.zeros_like(p, tf.bool)
    for _ in range(num_clusters):
        full = tf.logical_or(full, tf.logical_and(tf.logical_not(full), shares(full) >= capf))
    share = tf.where(full, zeros, shares(full))
    share = tf.round(share * _GRID) / _GRID
    base = tf.floor(share)
    frac = tf.where(full, -ones, share - base)
    left = tf.round(mf - tf.reduce_sum(tf.where(full, capf + zeros, base), axis=1))
    order = tf.argsort(-frac, axis=1, stable=True)
    rank = tf.argsort(order, axis=1, stable=True)         # inverse permutation
    bonus = tf.cast(rank, tf.float64) < left[:, None]
    return tf.cast(tf.where(full, capf + zeros, base + tf.cast(bonus, tf.float64)), tf.int32)
