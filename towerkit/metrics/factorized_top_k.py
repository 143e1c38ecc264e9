"""`FactorizedTopK`: TFRS's corpus top-K accuracy, computed with large chunked matmuls.

`tfrs.metrics.FactorizedTopK` streams the candidate dataset batch by batch (one small matmul
and two `top_k` ops per candidate batch of typically 128 rows). This metric computes the same
numbers with one matmul per chunk of many thousand candidates inside one `tf.while_loop`, and for
score-based evaluation counts the candidates that beat the true one instead of sorting.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf
import tensorflow_recommenders as tfrs

__all__ = ["FactorizedTopK"]

_TopK = tfrs.layers.factorized_top_k.TopK


class FactorizedTopK(tfrs.metrics.Factorized):
    """How often the true candidate is among the top K of the whole corpus (drop-in for TFRS).

    Same constructor, `update_state`, `result`, `reset_state(s)` and metric names as
    `tfrs.metrics.FactorizedTopK`, with identical values:

    - **score-based** (no `true_candidate_ids`): a query counts as a hit at `k` when fewer than
      `k` of its top `max(ks)` corpus scores are strictly greater than the true candidate's score
      `<query, true_candidate>` (computed as TFRS does: `reduce_sum(q * c)`). Ties with the
      true score are therefore hits (TFRS uses `tf.math.in_top_k`). A non-finite true score
      makes the query a miss, as does a +inf corpus score, or a NaN/-inf one when fewer than
      `max(ks)` corpus scores rank above it (`in_top_k` over TFRS's top `max(ks)`; TF's
      `top_k` ranks NaN last). Note that TFRS's true score (`reduce_sum`) and the same
      candidate's corpus score (`matmul`) may differ in the last bit, so the true candidate
      can beat itself: score-based top-1 is usually below the id-based one on float data.
    - **id-based** (`true_candidate_ids` given): a hit when the true id is among the first `k`
      ids of the corpus top `max(ks)`, ordered by score, ties broken by corpus position (the
      earlier row first, as TFRS's streaming `top_k` does).

    Both are weighted means over queries (`sample_weight`), accumulated across `update_state`
    calls until `reset_state`.

    Candidates are re-read from the dataset at every `update_state` (as TFRS does), so a dataset
    mapped through the candidate tower reflects its current weights. Queries are scored against
    `[chunk, dim]` slices of the corpus, with `chunk = max_chunk_elements // batch` rows, so the
    score block stays bounded whatever the corpus size.

    Corpus evaluation through an index: pass any `tfrs.layers.factorized_top_k.TopK` (every
    towerkit index is one) as `candidates`; the index is queried for `max(ks)` results. When the
    index is approximate (`is_exact()` False and not searching exhaustively), the metric names
    read `.../approximate_top_{k}_categorical_accuracy` and `exact` is False, and (as in TFRS)
    only id-based evaluation is allowed.

    Example:
    ```python
    metric = FactorizedTopK(candidates=movies.batch(4096).map(candidate_tower))
    task = towerkit.tasks.Retrieval(metrics=metric)
    metric.update_state(query_embeddings, true_candidate_embeddings)
    metric.result()  # [top_1, top_5, top_10, top_50, top_100]
    ```

    Args:
      candidates: `tf.data.Dataset` of candidate embedding batches `[b, dim]` or of
        `(identifiers [b], embeddings [b, dim])` tuples; a float `Tensor`/array `[n, dim]`;
        or a `TopK` layer (index).
      ks: Sequence[int]. Cut-offs, each >= 1.
      name: str. Metric name (prefix of the sub-metric names).
      max_chunk_elements: int. Largest `[batch, chunk]` score block scored at once (elements).

    Raises:
      TypeError: `candidates` of another kind.
      ValueError: empty or non-positive `ks`, or `max_chunk_elements` < 1.

    References:
      TFRS `tfrs.metrics.FactorizedTopK`:
      https://www.tensorflow.org/recommenders/api_docs/python/tfrs/metrics/FactorizedTopK ;
      Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
      Recommendations", RecSys 2019: https://doi.org/10.1145/3298689.3346996
    """

    def __init__(self, candidates: Union[_TopK, tf.data.Dataset, tf.Tensor],
                 ks: Sequence[int] = (1, 5, 10, 50, 100), name: str = "factorized_top_k",
                 max_chunk_elements: int = 1 << 23) -> None:
        ks = list(ks) if not isinstance(ks, int) else [ks]
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                             for k in ks):
            raise ValueError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}.")
        if not isinstance(max_chunk_elements, int) or max_chunk_elements < 1:
            raise ValueError(f"max_chunk_elements must be an int >= 1, got "
                             f"{max_chunk_elements!r}.")
        super().__init__(name=name)
        self._ks = ks
        self._max_k = max(ks)
        self._max_chunk_elements = max_chunk_elements
        self._dataset = self._matrix = self._index = None
        self._has_ids = False
        if isinstance(candidates, _TopK):
            self._index = candidates
            self.exact = bool(candidates.is_exact() or getattr(candidates, "exhaustive", False))
        elif isinstance(candidates, tf.data.Dataset):
            spec = candidates.element_spec
            self._has_ids = isinstance(spec, tuple)
            if self._has_ids and len(spec) != 2:
                raise TypeError("A candidate dataset of tuples must hold (identifiers, "
                                f"embeddings) batches; got elements {spec}.")
            emb_spec = spec[1] if self._has_ids else spec
            if not isinstance(emb_spec, tf.TensorSpec) or emb_spec.shape.rank != 2:
                raise TypeError("The candidate dataset must yield batches of embeddings "
                                f"[batch, dim] (batch it first); got {emb_spec}.")
            self._dataset = candidates
            self.exact = True
        else:
            try:
                matrix = tf.convert_to_tensor(candidates, tf.float32)
            except (TypeError, ValueError) as e:
                raise TypeError("candidates must be a tf.data.Dataset, a TopK layer (index) or "
                                f"a float [n, dim] tensor; got {type(candidates).__name__}.") from e
            if matrix.shape.rank != 2 or matrix.shape[0] == 0:
                raise ValueError(f"A candidate matrix must be [n >= 1, dim]; got {matrix.shape}.")
            self._matrix = matrix
            self.exact = True
        label = "top" if self.exact else "approximate_top"
        self._top_k_metrics = [tf.keras.metrics.Mean(name=f"{self.name}/{label}_{k}_categorical_accuracy")
                               for k in ks]

    @property
    def ks(self) -> list:
        """The cut-offs."""
        return list(self._ks)

    def reset_state(self) -> None:
        """Clears the accumulated means."""
        for metric in self._top_k_metrics:
            metric.reset_state()

    def reset_states(self) -> None:
        """Alias of `reset_state` (TFRS's name)."""
        self.reset_state()

    def result(self) -> list:
        """The top-k accuracies, one scalar per `k` in `ks` order."""
        return [metric.result() for metric in self._top_k_metrics]

    # ------------------------------------------------------------------ update
    def update_state(self, query_embeddings: tf.Tensor, true_candidate_embeddings: tf.Tensor,
                     true_candidate_ids: Optional[tf.Tensor] = None,
                     sample_weight: Optional[tf.Tensor] = None) -> tf.Operation:
        """Adds a batch of queries.

        Args:
          query_embeddings: `[batch, dim]` float (float16 is scored in float32).
          true_candidate_embeddings: `[batch, dim]`, each query's true candidate.
          true_candidate_ids: Optional `[batch]` (or `[batch, 1]`) ids: id-based evaluation
            (the candidates must carry identifiers of the same dtype).
          sample_weight: Optional `[batch]` weights.

        Returns:
          The update op.

        Raises:
          ValueError: score-based evaluation through an approximate index.
        """
        if true_candidate_ids is None and not self.exact:
            raise ValueError(f"The index {self._index.name} is approximate: its scores cannot be "
                             "compared to exact ones. Pass true_candidate_ids (id-based "
                             "evaluation) or evaluate through an exact index.")
        queries = tf.cast(query_embeddings, tf.float32)
        positive = tf.reduce_sum(queries * tf.cast(true_candidate_embeddings, tf.float32),
                                 axis=1, keepdims=True)
        if true_candidate_ids is None and self._index is None:
            hits = self._score_based_hits(queries, positive)
        else:
            if self._index is not None:
                top_scores, top_ids = self._index(queries, k=self._max_k)
            else:
                top_scores, top_ids = self._corpus_top_k(queries)
            if true_candidate_ids is None:
                hits = _in_top_k(positive, top_scores, self._ks)
            else:
                hits = _id_hits(true_candidate_ids, top_scores, top_ids, self._ks)
        updates = [metric.update_state(hit, sample_weight)
                   for hit, metric in zip(hits, self._top_k_metrics)]
        return tf.group(updates)

    # ------------------------------------------------------------------ corpus
    def _corpus(self):
        """`(embeddings [n, dim] float32, identifiers [n] or None)`, read now."""
        if self._matrix is not None:
            return self._matrix, None
        spec = self._dataset.element_spec
        emb_spec = spec[1] if self._has_ids else spec

        def add(state, batch):
            i, embs, ids = state
            if self._has_ids:
                ids = ids.write(i, batch[0])
                batch = batch[1]
            return i + 1, embs.write(i, tf.cast(batch, tf.float32)), ids

        embs = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
        ids = tf.TensorArray(spec[0].dtype if self._has_ids else tf.int32, size=0,
                             dynamic_size=True, infer_shape=False)
        _, embs, ids = self._dataset.reduce((tf.constant(0), embs, ids), add)
        embs = tf.ensure_shape(embs.concat(), [None, emb_spec.shape[1]])
        return embs, (ids.concat() if self._has_ids else None)

    def _chunk_rows(self, queries: tf.Tensor) -> tf.Tensor:
        batch = tf.maximum(tf.shape(queries)[0], 1)
        return tf.maximum(self._max_chunk_elements // batch, 1)

    def _score_based_hits(self, queries: tf.Tensor, positive: tf.Tensor) -> list:
        """Counts, per query, corpus scores strictly above the true score (no sorting)."""
        candidates, _ = self._corpus()
        n, chunk = tf.shape(candidates)[0], self._chunk_rows(queries)
        batch = tf.shape(queries)[0]

        def body(start, above, nan_or_inf, neg_inf):
            scores = tf.matmul(queries, candidates[start:start + chunk], transpose_b=True)
            above += tf.reduce_sum(tf.cast(scores > positive, tf.int32), axis=1)

            def non_finite():  # only when some score of the chunk is not finite
                low = tf.math.is_nan(scores) | (scores == float("-inf"))
                return (tf.reduce_any(scores == float("inf"), axis=1),
                        tf.reduce_sum(tf.cast(low, tf.int32), axis=1))

            bad, low = tf.cond(
                tf.reduce_all(tf.math.is_finite(tf.reduce_sum(scores, axis=1))),
                lambda: (tf.zeros([batch], tf.bool), tf.zeros([batch], tf.int32)), non_finite)
            return start + chunk, above, nan_or_inf | bad, neg_inf + low

        _, above, nan_or_inf, neg_inf = tf.while_loop(
            lambda start, *_: start < n, body,
            (tf.constant(0), tf.zeros([batch], tf.int32), tf.zeros([batch], tf.bool),
             tf.zeros([batch], tf.int32)))
        # in_top_k answers False when any of the top max(ks) scores is not finite: a +inf score,
        # or a NaN / -inf one that the top max(ks) reach (TF's top_k ranks NaN last).
        reaches_low = (neg_inf > 0) & (n - neg_inf < self._max_k)
        valid = tf.math.is_finite(positive[:, 0]) & ~nan_or_inf & ~reaches_low
        return [valid & (above < k) for k in self._ks]

    def _corpus_top_k(self, queries: tf.Tensor):
        """The `max(ks)` best `(scores, ids)` over the corpus; ties: the earlier row first."""
        candidates, identifiers = self._corpus()
        n, chunk = tf.shape(candidates)[0], self._chunk_rows(queries)
        batch, k = tf.shape(queries)[0], self._max_k

        def body(start, best_scores, best_rows):
            scores = tf.matmul(queries, candidates[start:start + chunk], transpose_b=True)
            scores, rows = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(scores)[1]))
            # Held results first: top_k keeps the lower position on ties, i.e. the earlier row.
            scores = tf.concat([best_scores, scores], axis=1)
            rows = tf.concat([best_rows, rows + start], axis=1)
            scores, order = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(scores)[1]))
            return start + chunk, scores, tf.gather(rows, order, batch_dims=1)

        _, scores, rows = tf.while_loop(
            lambda start, *_: start < n, body,
            (tf.constant(0), tf.zeros([batch, 0], tf.float32), tf.zeros([batch, 0], tf.int32)),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None]),
                              tf.TensorShape([None, None])))
        return scores, (rows if identifiers is None else tf.gather(identifiers, rows))


def _in_top_k(positive: tf.Tensor, top_scores: tf.Tensor, ks) -> list:
    """TFRS's score-based rule: `in_top_k` of the true score among `[true, top scores]`."""
    predictions = tf.concat([positive, tf.cast(top_scores, tf.float32)], axis=1)
    targets = tf.zeros(tf.shape(positive)[0], tf.int32)
    return [tf.math.in_top_k(targets=targets, predictions=predictions, k=k) for k in ks]


def _id_hits(true_ids: tf.Tensor, top_scores: tf.Tensor, top_ids: tf.Tensor, ks) -> list:
    """TFRS's id-based rule: the true id among the first k ids (NaN-padded slots never match)."""
    true_ids = tf.convert_to_tensor(true_ids)
    if true_ids.dtype != top_ids.dtype:
        if true_ids.dtype.is_integer and top_ids.dtype.is_integer:
            true_ids = tf.cast(true_ids, top_ids.dtype)
        else:
            raise TypeError(f"true_candidate_ids are {true_ids.dtype.name} but the candidates' "
                            f"identifiers are {top_ids.dtype.name}.")
    if true_ids.shape.rank == 1:
        true_ids = true_ids[:, tf.newaxis]
    padding = tf.math.is_nan(top_scores)
    match = tf.cast(tf.equal(true_ids, top_ids) & ~padding, tf.float32)
    return [tf.clip_by_value(tf.reduce_sum(match[:, :k], axis=1, keepdims=True), 0.0, 1.0)
            for k in ks]
