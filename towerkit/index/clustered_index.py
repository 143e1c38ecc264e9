"""`ClusteredIndex`: the "conquer" step, one index per cluster merged under per-user quotas."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from towerkit.index.base import Index
from towerkit.index.cluster_quotas import cluster_quotas_tf

__all__ = ["ClusteredIndex", "QUERIES", "INTENT"]

#: Keys of the query dict: per-cluster query vectors and the user-intent distribution.
QUERIES = "queries"
INTENT = "intent"


class ClusteredIndex(Index):
    """Divide-and-conquer retrieval: K per-cluster indexes, quotas `M_k ~ p_uk ** alpha`.

    Every candidate belongs to one cluster; `index(candidates, identifiers)` builds one
    sub-index per cluster (any towerkit index kind, from `make_index`) over that cluster's
    candidates only, so cluster `k` can answer only with its own items. A query is a dict
    `{"queries": [batch, K, dim], "intent": [batch, K]}` (or raw features mapped to that dict
    by `query_model`): cluster k is searched with its own query vector `queries[:, k]`, keeps
    its top `M_k` results, where the quotas `M_k` come from `cluster_quotas_tf(intent, M,
    alpha, cluster sizes)` (integers summing to exactly `M = k`, no quota above its cluster's
    size; see `towerkit.index.cluster_quotas`), and the union (exactly `M` items, disjoint by
    construction) is returned sorted by score, best first. `k` at call time is the list
    length `M` the quotas are computed for (a shorter list is not a prefix of a longer one).

    Everything runs in TF ops, so `towerkit.index.save_index` / `towerkit.serving.export` write
    ONE SavedModel holding all the sub-indexes, servable by stock TF Serving when the
    sub-indexes are (BruteForce, Annoy, the portable index). `query_embedding` returns the
    per-cluster queries `[batch, K, dim]`.

    Args:
      make_index: callable `k -> Index`, an unbuilt index without query model (e.g.
        `lambda k: towerkit.index.BruteForce(k=k)`); called once per cluster with
        `min(k, cluster size)`.
      clusters: int `[num_candidates]`, the cluster of each candidate row, in `[0, K)`.
      num_clusters: int K (every cluster must hold a candidate).
      query_model: optional Keras model, raw features -> `{"queries", "intent"}`.
      k: int. Maximum list length `M`.
      alpha: float >= 0. Quota exponent (0 = equal quotas).
      name: optional layer name.

    Raises:
      ValueError: bad `clusters`, `alpha` or `k` (at construction or `index`).

    Example:
      >>> index = ClusteredIndex(lambda k: BruteForce(k=k), clusters, num_clusters=18, k=50)
      >>> index.index(item_embeddings, item_ids)
      >>> scores, ids = index({"queries": q, "intent": p})    # q [b, 18, d], p [b, 18]

    References:
      Zhang et al., "Divide and Conquer: Towards Better Embedding-based Retrieval for
      Recommender Systems From a Multi-task Perspective", WWW 2023,
      https://arxiv.org/abs/2302.02657.
    """

    def __init__(self, make_index: Callable[[int], Index], clusters, num_clusters: int,
                 query_model: Optional[tf.keras.Model] = None, k: int = 50,
                 alpha: float = 1.0, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(query_model=query_model, k=k, name=name, **kwargs)
        if not callable(make_index):
            raise TypeError("make_index must be a callable k -> unbuilt Index, e.g. "
                            "lambda k: BruteForce(k=k).")
        if isinstance(alpha, bool) or not np.isscalar(alpha) or not np.isfinite(alpha) \
                or alpha < 0:
            raise ValueError(f"alpha must be a finite float >= 0, got {alpha!r}.")
        c = np.asarray(clusters)
        if c.ndim != 1 or c.dtype.kind not in "iu":
            raise ValueError(f"clusters must be a 1-D int array (one cluster per candidate), "
                             f"got shape {c.shape} dtype {c.dtype}.")
        if isinstance(num_clusters, bool) or not isinstance(num_clusters, (int, np.integer)) \
                or num_clusters < 1:
            raise ValueError(f"num_clusters must be a positive int, got {num_clusters!r}.")
        if len(c) and (c.min() < 0 or c.max() >= num_clusters):
            raise ValueError(f"cluster ids must lie in [0, {num_clusters}); got "
                             f"{int(c.min())}..{int(c.max())}.")
        sizes = np.bincount(c, minlength=num_clusters)
        if (sizes == 0).any():
            raise ValueError(f"clusters {np.flatnonzero(sizes == 0).tolist()} hold no "
                             "candidate; renumber the clusters in use as 0..K-1.")
        self.make_index = make_index
        self.clusters = c.astype(np.int64)
        self.num_clusters = int(num_clusters)
        self.alpha = float(alpha)
        self.capacity = sizes.astype(np.int64)
        self.cluster_indexes = []
        self.custom_ops = ()

    # ------------------------------------------------------------------ building
    def index(self, candidates, identifiers=None) -> "ClusteredIndex":
        n = np.shape(candidates)[0] if not isinstance(candidates, (tf.Tensor, tf.Variable)) \
            else int(candidates.shape[0])
        if n != len(self.clusters):
            raise ValueError(f"got {n} candidates but {len(self.clusters)} cluster "
                             "assignments: pass one cluster per candidate row.")
        return super().index(candidates, identifiers)

    def _build(self, candidates: np.ndarray) -> None:
        subs = []
        for c in range(self.num_clusters):
            rows = np.flatnonzero(self.clusters == c)
            sub = self.make_index(int(min(self._k, len(rows))))
            if not isinstance(sub, Index) or sub.is_built or sub.query_model is not None:
                raise TypeError("make_index must return a new, unbuilt towerkit Index without "
                                f"query_model; got {sub!r}.")
            # Identifiers of a sub-index are the global candidate rows.
            sub.index(candidates[rows], identifiers=rows.astype(np.int32))
            subs.append(sub)
            self._progress(f"cluster {c}: {len(rows)} candidates")
        self.cluster_indexes = subs
        self.custom_ops = tuple(sorted({op for s in subs for op in s.custom_ops}))

    def _index_size_bytes(self) -> int:
        return int(sum(s.size_bytes() for s in self.cluster_indexes))

    def is_exact(self) -> bool:
        return bool(self.cluster_indexes) and all(
            s.is_exact() or s.exhaustive for s in self.cluster_indexes)

    def _search(self, queries, k):
        raise TypeError("A ClusteredIndex searches per cluster under quotas: call it with "
                        "{'queries': [batch, K, dim], 'intent': [batch, K]}.")

    # ------------------------------------------------------------------ querying
    def cluster_queries(self, queries) -> Tuple[tf.Tensor, tf.Tensor]:
        """Raw queries -> `(queries [batch, K, dim] float32, intent [batch, K] float32)`."""
        self._check_built()
        out = self.query_model(queries) if self.query_model is not None else queries
        if not isinstance(out, dict) or set(out) != {QUERIES, INTENT}:
            raise TypeError(f"A ClusteredIndex query is a dict {{'{QUERIES}': [batch, K, dim], "
                            f"'{INTENT}': [batch, K]}} (or a query_model returning one); got "
                            f"{type(out).__name__}.")
        q = tf.cast(tf.convert_to_tensor(out[QUERIES]), tf.float32)
        p = tf.cast(tf.convert_to_tensor(out[INTENT]), tf.float32)
        if q.shape.rank != 3 or (q.shape[1] is not None and q.shape[1] != self.num_clusters) \
                or (q.shape[2] is not None and q.shape[2] != self._dim):
            raise ValueError(f"queries must be [batch, K={self.num_clusters}, dim={self._dim}], "
                             f"got {q.shape}.")
        if p.shape.rank != 2 or (p.shape[1] is not None and p.shape[1] != self.num_clusters):
            raise ValueError(f"intent must be [batch, K={self.num_clusters}], got {p.shape}.")
        q = tf.debugging.assert_all_finite(q, "Query embeddings contain NaN or Inf")
        p = tf.debugging.assert_all_finite(p, "The intent contains NaN or Inf")
        return tf.ensure_shape(q, [None, self.num_clusters, self._dim]), tf.ensure_shape(
            p, [None, self.num_clusters])

    def query_embedding(self, queries) -> tf.Tensor:
        """The per-cluster query vectors `[batch, K, dim]`."""
        return self.cluster_queries(queries)[0]

    def quotas(self, queries, k=None) -> tf.Tensor:
        """int32 `[batch, K]` quotas of the queries for a list of `k` (default `max_k`)."""
        k = self._resolve_k(k)
        return cluster_quotas_tf(self.cluster_queries(queries)[1], k, self.alpha, self.capacity)

    def call(self, queries, k=None) -> Tuple[tf.Tensor, tf.Tensor]:
        """`(scores [batch, k], identifiers [batch, k])`: the merged per-cluster lists."""
        k = self._resolve_k(k)
        q, intent = self.cluster_queries(queries)
        quotas = cluster_quotas_tf(intent, k, self.alpha, self.capacity)
        all_scores, all_rows = [], []
        for c, sub in enumerate(self.cluster_indexes):
            scores, local = sub._search_rows(q[:, c, :], sub.max_k)  # pylint: disable=protected-access
            rows = sub._gather_ids(local)  # global candidate rows; -1 = nothing found
            keep = tf.logical_and(tf.range(sub.max_k)[tf.newaxis, :] < quotas[:, c:c + 1],
                                  rows >= 0)
            all_scores.append(tf.where(keep, scores, float("-inf")))
            all_rows.append(tf.where(keep, rows, -1))
        scores, pos = tf.math.top_k(tf.concat(all_scores, axis=1), k=k)
        rows = tf.gather(tf.concat(all_rows, axis=1), pos, batch_dims=1)
        return scores, self._gather_ids(rows)

    def query_with_exclusions(self, queries, exclusions, k=None):
        raise NotImplementedError(
            "ClusteredIndex does not support exclusions: the quotas would no longer sum to k. "
            "Filter the merged list instead, or query each cluster_indexes[c] directly.")
