"""Partitioned MIPS search in stock TensorFlow ops (the search core of `PortableIndex`).

Layout (built once by `build_layout`): candidates are sorted by leaf into one flat
`[n, dim]` float32 tensor plus `offsets [num_leaves + 1]` (leaf `l` is rows
`offsets[l]:offsets[l + 1]`); no padded `[leaves, max_leaf, dim]` layout. Each row also has an int8
code of its residual to the leaf centre with a per-row scale, so that
`q . x ~= q . c_leaf + scale * (q . code)`.

Search, one query (batch <= `GROUPED_MIN_BATCH`, query by query): score the centres, take the top
`leaves_to_search` leaves, gather their rows and score them exactly in float32 (default,
`reorder=0`), or gather their int8 codes, score those and re-score the best `reorder` exactly.
Measured in TF 2.20 on CPU, the float32 path is faster: an int8 -> float32 `Cast` of the gathered
codes plus the per-leaf offset cost more than gathering 4x the bytes (see
`benchmarks/index/RESULTS.md`).
Search, a batch: group the (query, leaf) pairs by leaf and, for every touched leaf, score the
contiguous float32 block of that leaf against all the queries that probe it in one matmul
(exact scores, each leaf read once per batch), keep each pair's top k and merge.

References:
  Guo et al., "Accelerating Large-Scale Inference with Anisotropic Vector Quantization", ICML 2020,
  https://arxiv.org/abs/1908.10396 (ScaNN: partition, quantized scoring, exact reordering).
  Jegou et al., "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (inverted file
  with residual codes).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# At or below this batch size each query takes the gather + int8 path; above it, leaf grouping.
# (Grouping costs a loop step per touched leaf, which only pays off when leaves are shared.)
GROUPED_MIN_BATCH = 8
_NEG_INF = float("-inf")


def quantize_residuals(vectors: np.ndarray, centroids: np.ndarray, assignment: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 codes of `vectors - centroids[assignment]`.

    Returns:
      `(codes [n, dim] int8, scales [n] float32)` with `residual ~= scales[:, None] * codes`.
    """
    residuals = vectors - centroids[assignment]
    peak = np.abs(residuals).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(residuals / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def build_layout(embeddings: np.ndarray, centroids: np.ndarray, assignment: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Sorts candidates by leaf and quantizes their residuals.

    Args:
      embeddings: `[n, dim]` float32 candidates.
      centroids: `[num_leaves, dim]` float32 leaf centres.
      assignment: `[n]` int leaf of every candidate.

    Returns:
      dict of arrays: `centroids [L, dim]`, `vectors [n, dim]` float32 sorted by leaf,
      `codes [n, dim]` int8 and `scales [n]` float32 (residual codes), `offsets [L + 1]` int64
      (leaf `l` is sorted rows `offsets[l]:offsets[l + 1]`) and `rows [n]` int64 (original row of
      each sorted row).
    """
    num_leaves = centroids.shape[0]
    order = np.argsort(assignment, kind="stable")
    sorted_leaves = assignment[order]
    offsets = np.searchsorted(sorted_leaves, np.arange(num_leaves + 1)).astype(np.int64)
    vectors = np.ascontiguousarray(embeddings[order], np.float32)
    codes, scales = quantize_residuals(vectors, centroids, sorted_leaves)
    return {"centroids": np.asarray(centroids, np.float32), "vectors": vectors, "codes": codes,
            "scales": scales, "offsets": offsets, "rows": order.astype(np.int64)}


def search(layout, queries, k, leaves_to_search, reorder) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-k by inner product over a layout from `build_layout` (arrays, tensors or variables).

    Args:
      layout: dict with the keys `build_layout` returns.
      queries: `[batch, dim]` float32.
      k: int32 scalar (Python int or tensor).
      leaves_to_search: int32 scalar. Leaves probed per query (clipped to the number of leaves).
      reorder: int32 scalar, one-query path only. 0: score the probed rows exactly in float32;
        > 0: score their int8 codes and re-score the best `max(reorder, k)` exactly.

    Returns:
      `(scores [batch, k] float32, rows [batch, k] int64)`: original candidate rows, best first;
      `(-inf, -1)` fill the tail when the probed leaves hold fewer than `k` candidates.
    """
    # Read every variable once: the search works on plain tensors. (Mixing a sparse read of a
    # resource variable with dense reads makes TensorFlow copy the whole variable on each read.)
    t = {name: tf.convert_to_tensor(value) for name, value in layout.items()}
    queries = tf.convert_to_tensor(queries, tf.float32)
    k = tf.cast(k, tf.int32)
    batch = tf.shape(queries)[0]
    probes = tf.minimum(tf.cast(leaves_to_search, tf.int32), tf.shape(t["centroids"])[0])
    leaf_scores, leaves = tf.math.top_k(tf.matmul(queries, t["centroids"], transpose_b=True),
                                        probes)
    reorder = tf.cast(reorder, tf.int32)
    scores, positions = tf.cond(
        batch <= GROUPED_MIN_BATCH,
        lambda: _search_each(t, queries, leaf_scores, leaves, k, reorder),
        lambda: _search_grouped(t, queries, leaves, k))
    rows = tf.gather(t["rows"], tf.maximum(positions, 0))
    return scores, tf.where(positions >= 0, rows, tf.constant(-1, tf.int64))


def _search_one(t, query, leaf_scores, leaves, k, reorder):
    """One query `[dim]` -> `[k]`: gather the probed leaves' rows and score them.

    `reorder == 0`: exact float32 scores of every gathered row. `reorder > 0`: int8 residual codes
    first, then the best `max(reorder, k)` re-scored exactly.
    """
    starts = tf.gather(t["offsets"], leaves)
    lengths = tf.gather(t["offsets"], leaves + 1) - starts
    positions = tf.ragged.range(starts, starts + lengths).flat_values  # [m]

    def exact():
        return tf.linalg.matvec(tf.gather(t["vectors"], positions), query), positions

    def quantized():
        codes = tf.cast(tf.gather(t["codes"], positions), tf.float32)
        cheap = tf.linalg.matvec(codes, query) * tf.gather(t["scales"], positions)
        cheap += tf.repeat(leaf_scores, lengths)
        _, best = tf.math.top_k(cheap, tf.minimum(tf.maximum(reorder, k), tf.size(cheap)))
        candidates = tf.gather(positions, best)
        return tf.linalg.matvec(tf.gather(t["vectors"], candidates), query), candidates

    scores, candidates = tf.cond(reorder > 0, quantized, exact)
    scores, top = _top_k_padded(scores[tf.newaxis], candidates[tf.newaxis], k)
    return scores[0], top[0]


def _search_each(t, queries, leaf_scores, leaves, k, reorder):
    """The one-query path for each query of a small batch (no loop for a single query)."""

    def each():
        return tf.map_fn(lambda args: _search_one(t, *args, k, reorder),
                         (queries, leaf_scores, leaves),
                         fn_output_signature=(tf.TensorSpec([None], tf.float32),
                                              tf.TensorSpec([None], tf.int64)))

    def single():
        scores, positions = _search_one(t, queries[0], leaf_scores[0], leaves[0], k, reorder)
        return scores[tf.newaxis], positions[tf.newaxis]

    return tf.cond(tf.shape(queries)[0] == 1, single, each)


def _search_grouped(t, queries, leaves, k):
    """Exact scores, one matmul per touched leaf against the queries that probe it."""
    vectors, offsets = t["vectors"], t["offsets"]
    probes = tf.shape(leaves)[1]
    pair_leaf = tf.reshape(leaves, [-1])  # pair p = query * probes + j
    order = tf.argsort(pair_leaf, stable=True)
    touched, _, counts = tf.unique_with_counts(tf.gather(pair_leaf, order))
    ends = tf.cumsum(counts)
    starts = ends - counts
    num_touched = tf.size(touched)
    out_scores = tf.TensorArray(tf.float32, size=num_touched, infer_shape=False)
    out_positions = tf.TensorArray(tf.int64, size=num_touched, infer_shape=False)
    for i in tf.range(num_touched):
        first, last = offsets[touched[i]], offsets[touched[i] + 1]
        pairs = order[starts[i]:ends[i]]
        scores = tf.matmul(tf.gather(queries, pairs // probes), vectors[first:last],
                           transpose_b=True)  # [queries probing the leaf, leaf size]
        local = tf.broadcast_to(tf.range(first, last)[tf.newaxis],
                                tf.shape(scores, out_type=tf.int64))
        top_scores, top_positions = _top_k_padded(scores, local, k)
        out_scores = out_scores.write(i, top_scores)
        out_positions = out_positions.write(i, top_positions)
    # Rows come out in sorted-pair order; put them back in pair order, then merge per query.
    back = tf.math.invert_permutation(order)
    batch = tf.shape(queries)[0]
    pair_scores = tf.reshape(tf.gather(out_scores.concat(), back), [batch, probes * k])
    pair_positions = tf.reshape(tf.gather(out_positions.concat(), back), [batch, probes * k])
    return _top_k_padded(pair_scores, pair_positions, k)


def _top_k_padded(scores, positions, k):
    """Row-wise top-k of `scores [b, m]` carrying `positions [b, m]`; (-inf, -1) pad if m < k."""
    short = tf.maximum(k - tf.shape(scores)[1], 0)
    scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=_NEG_INF)
    positions = tf.pad(positions, [[0, 0], [0, short]], constant_values=-1)
    top_scores, index = tf.math.top_k(scores, k)
    return top_scores, tf.gather(positions, index, batch_dims=1)
