"""ComiRec's controllable aggregation: a greedy, diversity-aware merge of per-interest results."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

__all__ = ["ControllableAggregation", "per_interest_candidates"]


def per_interest_candidates(index, queries, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-`k` candidates of every interest, before any merge.

    Args:
      index: a built `towerkit.index.Index`.
      queries: raw query features (passed through the index's query model) or embeddings
        `[batch, num_interests, dim]`.
      k: int. Results per interest, `<= index.max_k`.

    Returns:
      `(scores [batch, num_interests, k] float32, ids [batch, num_interests, k])` as NumPy.

    Raises:
      ValueError: the query embeddings are not `[batch, num_interests, dim]`, or `k` is invalid.
    """
    embeddings = index.query_embedding(queries)
    if embeddings.shape.rank != 3:
        raise ValueError(
            "per_interest_candidates needs multi-interest queries [batch, num_interests, dim], "
            f"got {embeddings.shape}; single-vector queries need no aggregation.")
    k = index._resolve_k(k)
    batch, interests = int(embeddings.shape[0]), int(embeddings.shape[1])
    scores, rows = index._search_rows(tf.reshape(embeddings, [batch * interests, -1]), k)
    ids = index._gather_ids(rows)
    return (scores.numpy().reshape(batch, interests, -1),
            ids.numpy().reshape(batch, interests, -1))


class ControllableAggregation:
    """Merges per-interest retrieval results into `N` items, trading accuracy for diversity.

    ComiRec (Section 3.4) scores a set `S` of items for user `u` by

        Q(u, S) = sum_{i in S} f(u, i) + lambda * sum_{i in S} sum_{j in S} g(i, j),

    where `f(u, i) = max_k e_i . v_u^k` (the item's best score over the interests) and
    `g(i, j)` is 1 when items `i` and `j` have different categories, and maximises it greedily
    (the paper's Algorithm 1): starting from `S = {}`, `N` times add

        argmax_{i in M \\ S}  f(u, i) + lambda * sum_{j in S} g(i, j)

    where `M` is the union of the interests' top-k lists (a candidate retrieved by several
    interests keeps its maximum score). With `lambda = 0` the result is the candidates sorted by
    score, duplicates removed, top `N` (the plain max-merge); larger `lambda` favours items
    whose categories differ from the ones already picked.

    Categories may be one id per item (`categories [n]`, the paper's `g = [CATE(i) != CATE(j)]`)
    or a 0-padded list of category ids per item (`[n, max_categories]`, e.g. MovieLens genres),
    for which `g(i, j) = 1 - |C_i & C_j| / |C_i | C_j|` (Jaccard distance; it reduces to the
    paper's indicator for single categories; two items without categories have `g = 0`).

    Ties in the greedy step go to the higher retrieval score, then to the order in which the
    candidates were retrieved.

    Args:
      candidate_ids: array `[n]` of the index's identifiers (bytes or int).
      categories: int array `[n]` or `[n, max_categories]` (0 = padding in the 2-D form),
        aligned with `candidate_ids`.
      diversity: float >= 0. lambda.

    Example:
      >>> agg = ControllableAggregation(ids, genres, diversity=0.1)
      >>> scores, items = agg(*per_interest_candidates(index, queries, k=50), n=50)

    References:
      Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020,
      https://arxiv.org/abs/2005.09347 (Section 3.4, Algorithm 1).
    """

    def __init__(self, candidate_ids, categories, diversity: float = 0.0):
        ids = np.asarray(candidate_ids)
        cats = np.asarray(categories)
        if ids.ndim != 1:
            raise ValueError(f"candidate_ids must be 1-D [n], got shape {ids.shape}.")
        if cats.shape[:1] != ids.shape or cats.ndim not in (1, 2):
            raise ValueError(
                f"categories must be [n={len(ids)}] or [n, max_categories], aligned with "
                f"candidate_ids; got shape {cats.shape}.")
        if cats.dtype.kind not in "iub":
            raise TypeError(f"categories must be integer ids, got dtype {cats.dtype}.")
        if isinstance(diversity, bool) or not np.isscalar(diversity) or not diversity >= 0:
            raise ValueError(f"diversity (lambda) must be a float >= 0, got {diversity!r}.")
        self.diversity = float(diversity)
        self._row = {self._key(x): r for r, x in enumerate(ids)}
        if len(self._row) != len(ids):
            raise ValueError("candidate_ids must be unique.")
        if cats.ndim == 1:
            self._labels = cats.astype(np.int64)
            self._multi_hot = None
        else:
            vocab = int(cats.max()) + 1 if cats.size else 1
            hot = np.zeros((len(ids), vocab), np.float32)
            rows = np.repeat(np.arange(len(ids)), cats.shape[1])
            hot[rows, cats.ravel()] = 1.0
            hot[:, 0] = 0.0  # padding
            self._multi_hot = hot
            self._labels = None

    @staticmethod
    def _key(x):
        if isinstance(x, (bytes, np.bytes_)):
            return bytes(x)
        if isinstance(x, str):
            return x.encode()
        return int(x)

    def distance(self, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
        """`g(i, j)` for candidate rows: `[len(a), len(b)]` in [0, 1]."""
        if self._labels is not None:
            return (self._labels[rows_a][:, None] != self._labels[rows_b][None, :]).astype(
                np.float64)
        a, b = self._multi_hot[rows_a], self._multi_hot[rows_b]
        inter = a @ b.T
        union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
        return np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)

    def __call__(self, scores, ids, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """Aggregates one batch of per-interest results.

        Args:
          scores: float `[batch, num_interests, k]` (or `[batch, m]`) retrieval scores.
          ids: `[batch, num_interests, k]` (or `[batch, m]`) identifiers, aligned with `scores`.
          n: int. Number of items to return per user.

        Returns:
          `(scores [batch, n], ids [batch, n])`: the picked items in the order picked, with
          their retrieval scores `f(u, i)`.

        Raises:
          ValueError: shapes disagree, an id is not a known candidate, or a user has fewer
            than `n` distinct candidates (retrieve more per interest).
        """
        scores = np.asarray(scores, np.float64)
        ids = np.asarray(ids)
        if scores.shape != ids.shape or scores.ndim not in (2, 3):
            raise ValueError(
                "scores and ids must have the same shape [batch, num_interests, k] or "
                f"[batch, m]; got {scores.shape} and {ids.shape}.")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}.")
        batch = scores.shape[0]
        scores = scores.reshape(batch, -1)
        ids = ids.reshape(batch, -1)
        out_scores = np.empty((batch, n), np.float32)
        out_ids = np.empty((batch, n), dtype=ids.dtype)
        for b in range(batch):
            out_scores[b], picked = self._aggregate_one(scores[b], ids[b], n)
            out_ids[b] = ids[b][picked]
        return out_scores, out_ids

    def _aggregate_one(self, scores, ids, n):
        # M: distinct candidates with their best score, in retrieval order of first appearance.
        best, first = {}, {}
        for pos, (s, x) in enumerate(zip(scores, ids)):
            key = self._key(x)
            if not np.isfinite(s):
                continue
            if key not in best:
                best[key], first[key] = s, pos
            elif s > best[key]:
                best[key] = s
        unknown = [k for k in best if k not in self._row]
        if unknown:
            raise ValueError(f"ids {unknown[:5]} are not among the candidate_ids given to "
                             "ControllableAggregation; build it from the index's identifiers.")
        if len(best) < n:
            raise ValueError(
                f"only {len(best)} distinct candidates were retrieved but n={n} were asked for: "
                "retrieve more per interest (k >= n) or ask for fewer.")
        keys = sorted(best, key=lambda key: (-best[key], first[key]))
        f = np.array([best[key] for key in keys])
        rows = np.array([self._row[key] for key in keys])
        positions = np.array([first[key] for key in keys])
        if self.diversity == 0.0:
            return f[:n], positions[:n]
        g = self.distance(rows, rows)
        gain = np.zeros(len(keys))      # sum_{j in S} g(i, j)
        taken = np.zeros(len(keys), bool)
        picked = []
        for _ in range(n):
            objective = np.where(taken, -np.inf, f + self.diversity * gain)
            i = int(np.argmax(objective))  # first maximum = higher score, earlier retrieval
            picked.append(i)
            taken[i] = True
            gain += g[:, i]
        picked = np.array(picked)
        return f[picked], positions[picked]
