"""Partitioned MIPS search in stock TensorFlow ops (the search core of `PortableIndex`).

Layout (built once by `PartitionedSearcher.build`): candidates are sorted by leaf into one flat
`[n, dim]` float32 tensor plus `offsets [num_leaves + 1]` (leaf `l` is rows
`offsets[l]:offsets[l + 1]`); no padded `[leaves, max_leaf, dim]` layout. Each row also has an int8
code of its residual to the leaf centre with a per-row scale, so that
`q . x ~= q . c_leaf + scale * (q . code)`.

Search, one query (`batch == 1`): score the centres, take the top `leaves_to_search` leaves, gather
their int8 codes, score them cheaply, keep the best `reorder` candidates and re-score those exactly
in float32.
Search, a batch: group the (query, leaf) pairs by leaf and, for every touched leaf, score the
contiguous float32 block of that leaf against all the queries that probe it in one matmul
(exact scores, each leaf read once per batch), keep each pair's top k and merge.

References:
  Guo et al., "Accelerating Large-Scale Inference with Anisotropic Vector Quantization", ICML 2020,
  https://arxiv.org/abs/1908.10396 (ScaNN: partition, quantized scoring, exact reordering).
  Jegou et al., "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (IVF + residual codes).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# At or below this batch size each query takes the gather + int8 path; above it, leaf grouping.
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


class PartitionedSearcher(tf.Module):
    """Holds the sorted layout as variables and searches it; see the module docstring.

    Args:
      centroids: `[num_leaves, dim]` float32 leaf centres.
      vectors: `[n, dim]` float32 candidates sorted by leaf.
      codes: `[n, dim]` int8 residual codes (same order).
      scales: `[n]` float32 code scales.
      offsets: `[num_leaves + 1]` int64 start row of each leaf, `offsets[-1] == n`.
      rows: `[n]` int64 original candidate row of each sorted row.
      leaves_to_search: int. Leaves probed per query.
      reorder: int. Candidates re-scored exactly per query (batch-1 path).
    """

    def __init__(self, centroids, vectors, codes, scales, offsets, rows, leaves_to_search: int,
                 reorder: int, name: str | None = None):
        super().__init__(name=name)
        def var(value, dtype, name):
            return tf.Variable(tf.convert_to_tensor(value, dtype), trainable=False, name=name)
        self.centroids = var(centroids, tf.float32, "centroids")
        self.vectors = var(vectors, tf.float32, "vectors")
        self.codes = var(codes, tf.int8, "codes")
        self.scales = var(scales, tf.float32, "scales")
        self.offsets = var(offsets, tf.int64, "offsets")
        self.rows = var(rows, tf.int64, "rows")
        self.leaves_to_search = var(leaves_to_search, tf.int32, "leaves_to_search")
        self.reorder = var(reorder, tf.int32, "reorder")

    @classmethod
    def build(cls, embeddings: np.ndarray, centroids: np.ndarray, assignment: np.ndarray,
              leaves_to_search: int, reorder: int) -> "PartitionedSearcher":
        """Sorts `embeddings` by leaf, quantizes residuals and returns the searcher."""
        num_leaves = centroids.shape[0]
        order = np.argsort(assignment, kind="stable")
        sorted_leaves = assignment[order]
        offsets = np.searchsorted(sorted_leaves, np.arange(num_leaves + 1)).astype(np.int64)
        vectors = np.ascontiguousarray(embeddings[order], np.float32)
        codes, scales = quantize_residuals(vectors, centroids, sorted_leaves)
        return cls(centroids, vectors, codes, scales, offsets, order.astype(np.int64),
                   leaves_to_search, reorder)

    @property
    def num_leaves(self) -> int:
        return int(self.centroids.shape[0])

    def search(self, queries: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
        """Top-k by inner product.

        Args:
          queries: `[batch, dim]` float32.
          k: int32 scalar (Python int or tensor), at most the number of candidates.

        Returns:
          `(scores [batch, k] float32, rows [batch, k] int64)`: original candidate rows, best first.
        """
        queries = tf.convert_to_tensor(queries, tf.float32)
        k = tf.cast(k, tf.int32)
        batch = tf.shape(queries)[0]
        # Read every variable once: the search works on plain tensors (no per-op variable reads).
        centroids = self.centroids.read_value()
        probes = tf.minimum(self.leaves_to_search.read_value(), tf.shape(centroids)[0])
        leaf_scores, leaves = tf.math.top_k(tf.matmul(queries, centroids, transpose_b=True), probes)
        scores, positions = tf.cond(
            batch <= GROUPED_MIN_BATCH,
            lambda: self._search_each(queries, leaf_scores, leaves, k),
            lambda: self._search_grouped(queries, leaves, k))
        rows = tf.gather(self.rows.read_value(), tf.maximum(positions, 0))
        return scores, tf.where(positions >= 0, rows, tf.constant(-1, tf.int64))

    def _search_each(self, queries, leaf_scores, leaves, k):
        """Gather + int8 scoring + exact reorder, one query at a time."""
        vectors = self.vectors.read_value()
        codes = self.codes.read_value()
        scales = self.scales.read_value()
        offsets = self.offsets.read_value()
        reorder = tf.maximum(self.reorder.read_value(), k)

        def one(args):
            query, query_leaf_scores, query_leaves = args
            starts = tf.gather(offsets, query_leaves)
            lengths = tf.gather(offsets, query_leaves + 1) - starts
            positions = tf.ragged.range(starts, starts + lengths).flat_values  # [m]
            cheap = tf.linalg.matvec(tf.cast(tf.gather(codes, positions), tf.float32), query)
            cheap = cheap * tf.gather(scales, positions) + tf.repeat(query_leaf_scores, lengths)
            keep = tf.minimum(reorder, tf.size(cheap))
            _, best = tf.math.top_k(cheap, keep)
            candidates = tf.gather(positions, best)
            exact = tf.linalg.matvec(tf.gather(vectors, candidates), query)
            return _top_k_padded(exact[tf.newaxis], candidates[tf.newaxis], k)

        scores, positions = tf.map_fn(
            lambda args: tuple(t[0] for t in one(args)), (queries, leaf_scores, leaves),
            fn_output_signature=(tf.TensorSpec([None], tf.float32),
                                 tf.TensorSpec([None], tf.int64)))
        return scores, positions

    def _search_grouped(self, queries, leaves, k):
        """Exact scores, one matmul per touched leaf against the queries that probe it."""
        vectors = self.vectors.read_value()
        offsets = self.offsets.read_value()
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
            leaf = touched[i]
            first, last = offsets[leaf], offsets[leaf + 1]
            block = vectors[first:last]  # [leaf_size, dim], a contiguous slice
            pairs = order[starts[i]:ends[i]]
            scores = tf.matmul(tf.gather(queries, pairs // probes), block, transpose_b=True)
            local = tf.range(first, last)[tf.newaxis]
            top_scores, top_positions = _top_k_padded(
                scores, tf.broadcast_to(local, tf.shape(scores, out_type=tf.int64)), k)
            out_scores = out_scores.write(i, top_scores)
            out_positions = out_positions.write(i, top_positions)
        # Rows come out in sorted-pair order; put them back in pair order, then merge per query.
        back = tf.math.invert_permutation(order)
        pair_scores = tf.gather(out_scores.concat(), back)
        pair_positions = tf.gather(out_positions.concat(), back)
        batch = tf.shape(queries)[0]
        merged_scores = tf.reshape(pair_scores, [batch, probes * k])
        merged_positions = tf.reshape(pair_positions, [batch, probes * k])
        return _top_k_padded(merged_scores, merged_positions, k)


def _top_k_padded(scores, positions, k):
    """Row-wise top-k of `scores [b, m]` carrying `positions [b, m]`; pads with (-inf, -1) if m < k."""
    short = tf.maximum(k - tf.shape(scores)[1], 0)
    scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=_NEG_INF)
    positions = tf.pad(positions, [[0, 0], [0, short]], constant_values=-1)
    top_scores, index = tf.math.top_k(scores, k)
    return top_scores, tf.gather(positions, index, batch_dims=1)
