"""In-batch softmax retrieval task: `tfrs.tasks.Retrieval` configured from data.

Adds to `tfrs.tasks.Retrieval`: the logQ sampling-probability correction computed from item
frequencies (a lookup table from candidate id to its share of training interactions), input
checks with actionable errors, a Keras config, and id-based or score-based top-K metrics.

Loss reduction: like TFRS, the loss is the cross-entropy **summed** over the batch (not averaged),
so its scale grows with the batch size; divide the learning rate accordingly when changing it.

Under a `tf.distribute` strategy with several replicas, `negatives="global"` (the default)
gathers the candidates of every replica, so each query is scored against the whole global batch
and the summed loss and its gradients equal the single-device ones on the same global batch
(TFRS scores each replica's queries against its own candidates only: `negatives="per-replica"`).
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

__all__ = ["Retrieval", "NEGATIVES", "default_negatives", "set_default_negatives"]

NEGATIVES = ("global", "per-replica")
_DEFAULT_NEGATIVES = ["global"]


def set_default_negatives(negatives: str) -> str:
    """Sets the in-batch negatives of `Retrieval` tasks built with `negatives=None`.

    `towerkit train --negatives` calls it for the run, so every recipe's retrieval task follows
    the flag without code of its own. Read when a task's loss is traced.

    Args:
      negatives: `"global"` (candidates gathered across replicas) or `"per-replica"`.

    Returns:
      The previous default.

    Raises:
      ValueError: an unknown value.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}.")
    previous, _DEFAULT_NEGATIVES[0] = _DEFAULT_NEGATIVES[0], negatives
    return previous


def default_negatives() -> str:
    """The negatives of `Retrieval` tasks built with `negatives=None` (see
    `set_default_negatives`)."""
    return _DEFAULT_NEGATIVES[0]


def _gather_candidates(candidates: tf.Tensor, candidate_ids: Optional[tf.Tensor],
                       context) -> tuple:
    """All-gathers the candidates (and ids) of every replica, this replica's block first.

    Replica `r` holds rows `[o_r, o_r + n_r)` of the gathered `[sum n, dim]` matrix. Putting its
    own block first keeps TFRS's diagonal labels (query `i`'s positive is column `i`): the same
    as offsetting the labels by `o_r`, and the softmax does not depend on the column order. The
    gradient of `all_gather` sums the other replicas' gradients into each replica's own rows,
    so summing the replicas' gradients (what the optimizer does) gives the global gradient.
    """
    sizes = context.all_gather(tf.shape(candidates)[:1], axis=0)  # [replicas]
    replica = context.replica_id_in_sync_group
    start = tf.reduce_sum(sizes[:replica])
    end = start + sizes[replica]

    def own_block_first(values):
        # Slices, not tf.gather: the gradient stays dense, as all_gather's gradient needs.
        return tf.concat([values[start:end], values[:start], values[end:]], axis=0)

    gathered = own_block_first(context.all_gather(candidates, axis=0))
    if candidate_ids is None:
        return gathered, None
    ids = tf.reshape(tf.convert_to_tensor(candidate_ids), [-1])
    if ids.dtype == tf.string:
        # Collectives carry numbers only: accidental hits compare 64-bit fingerprints of the
        # ids (a false match needs a 64-bit collision among one global batch).
        ids = tf.strings.to_hash_bucket_fast(ids, 2 ** 63 - 1)
    elif ids.dtype != tf.int64:
        ids = tf.cast(ids, tf.int64)
    return gathered, own_block_first(context.all_gather(ids, axis=0))


@tf.keras.utils.register_keras_serializable(package="towerkit")
class Retrieval(tfrs.tasks.Retrieval):
    """Softmax over in-batch candidates, with temperature, logQ correction, hard negatives,
    accidental-hit removal and sample weights.

    For a batch of `B` (query `q_i`, positive candidate `c_i`) pairs the logits are
    `s_ij = <q_i, c_j> / temperature - log p(c_j)` (the `- log p` term only with logQ), and the
    loss is `sum_i w_i * (logsumexp_j s_ij - s_ii)` over the batch (TFRS sums, it does not
    average). `remove_accidental_hits` masks `j != i` where `c_j` has the same id as `c_i`;
    `num_hard_negatives` keeps only the highest-scoring negatives per row.

    The `- log p` term is exact for every `p > 0`. TFRS's own correction
    (`tfrs.layers.loss.SamplingProbablityCorrection`) clips `p` to `[1e-6, 1]` first, which
    would under-correct items rarer than one in a million; towerkit therefore does not hand
    `p` to TFRS but appends one column to the embeddings (`-temperature * log p(c_j)` to the
    candidates, 1 to the queries), so the scores TFRS computes already carry the exact term.

    Example:
    ```python
    task = Retrieval(temperature=0.1, remove_accidental_hits=True,
                     sampling_vocabulary=vocab.as_list(), sampling_counts=vocab.counts)
    loss = task(query_embeddings, candidate_embeddings, candidate_ids=item_ids)
    ```

    Args:
      temperature: float or None. Divides the logits; smaller sharpens the softmax.
      num_hard_negatives: int or None. Keep only this many hardest negatives per query.
      remove_accidental_hits: bool. Mask in-batch negatives that share the positive's id
        (needs `candidate_ids` at call time).
      sampling_vocabulary: Sequence of candidate ids (str or int) whose training counts are
        `sampling_counts`; enables the logQ correction (needs `candidate_ids` at call time). Ids
        missing from it get the smallest known probability.
      sampling_counts: Sequence[int]. Interaction counts aligned with `sampling_vocabulary`.
      metrics: Optional `tfrs.metrics.FactorizedTopK` (or list) over the candidate corpus.
      id_based_metrics: bool. Pass `candidate_ids` to the metrics (their index must then hold
        candidate identifiers); otherwise metrics are score-based, as in the TFRS tutorials.
      batch_metrics: Optional Keras metrics over the in-batch scores.
      negatives: `"global"`, `"per-replica"` or None (the run's default, `default_negatives()`,
        `"global"` unless `towerkit train --negatives` sets it). Only matters under a
        `tf.distribute` strategy with several replicas: `"global"` all-gathers the candidate
        embeddings (with their logQ terms) and ids, so every query is scored against the
        candidates of the whole global batch and the loss and gradients equal the
        single-device ones; `"per-replica"` keeps TFRS's behaviour (each replica's queries
        against its own candidates only: fewer negatives, another loss).

    References:
      Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
      Recommendations", RecSys 2019 (logQ correction): https://doi.org/10.1145/3298689.3346996
    """

    def __init__(self, temperature: Optional[float] = None,
                 num_hard_negatives: Optional[int] = None,
                 remove_accidental_hits: bool = False,
                 sampling_vocabulary: Optional[Sequence] = None,
                 sampling_counts: Optional[Sequence[int]] = None,
                 metrics=None, id_based_metrics: bool = False, batch_metrics=None,
                 negatives: Optional[str] = None, name: Optional[str] = None, **kwargs):
        if negatives is not None and negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES} or None (the run's "
                             f"default), got {negatives!r}.")
        self.negatives = negatives
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if num_hard_negatives is not None and (not isinstance(num_hard_negatives, int)
                                               or num_hard_negatives < 1):
            raise ValueError(f"num_hard_negatives must be a positive int, got {num_hard_negatives!r}.")
        super().__init__(metrics=metrics, batch_metrics=batch_metrics, temperature=temperature,
                         num_hard_negatives=num_hard_negatives,
                         remove_accidental_hits=remove_accidental_hits, name=name, **kwargs)
        self.id_based_metrics = bool(id_based_metrics)
        self._sampling_table = None
        self.sampling_vocabulary = None
        self.sampling_counts = None
        if (sampling_vocabulary is None) != (sampling_counts is None):
            raise ValueError("Pass both sampling_vocabulary and sampling_counts for the logQ "
                             "correction, or neither.")
        if sampling_vocabulary is not None:
            self._build_sampling_table(sampling_vocabulary, sampling_counts)

    def _build_sampling_table(self, vocabulary, counts) -> None:
        vocabulary = [v.decode("utf-8") if isinstance(v, bytes) else v for v in vocabulary]
        if isinstance(vocabulary[0], (int, np.integer)):
            vocabulary = [int(v) for v in vocabulary]
        counts = np.asarray(counts, dtype=np.float64)
        if len(vocabulary) != len(counts) or len(counts) == 0:
            raise ValueError(f"sampling_vocabulary ({len(vocabulary)}) and sampling_counts "
                             f"({len(counts)}) must be non-empty and of equal length.")
        if (counts <= 0).any():
            raise ValueError("sampling_counts must be positive; drop ids that never occur.")
        probabilities = counts / counts.sum()
        self.sampling_vocabulary = vocabulary
        self.sampling_counts = [int(c) for c in counts]
        keys = tf.constant(vocabulary, dtype=tf.string if isinstance(vocabulary[0], str)
                           else tf.int64)
        self._sampling_key_dtype = keys.dtype
        self._sampling_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.constant(probabilities, tf.float32)),
            default_value=float(probabilities.min()))

    def sampling_probability(self, candidate_ids: tf.Tensor) -> tf.Tensor:
        """`p(c)`: each candidate's share of the training interactions, `[batch]` float32."""
        if self._sampling_table is None:
            raise ValueError("This task has no sampling_vocabulary; logQ correction is off.")
        candidate_ids = tf.convert_to_tensor(candidate_ids)
        if candidate_ids.dtype != self._sampling_key_dtype:
            if candidate_ids.dtype.is_integer and self._sampling_key_dtype == tf.int64:
                candidate_ids = tf.cast(candidate_ids, tf.int64)
            else:
                raise TypeError(f"candidate_ids are {candidate_ids.dtype.name} but the sampling "
                                f"vocabulary holds {self._sampling_key_dtype.name} ids.")
        return self._sampling_table.lookup(candidate_ids)

    def call(self, query_embeddings: tf.Tensor, candidate_embeddings: tf.Tensor,
             candidate_ids: Optional[tf.Tensor] = None,
             sample_weight: Optional[tf.Tensor] = None,
             compute_metrics: bool = True, compute_batch_metrics: bool = True) -> tf.Tensor:
        """Returns the summed loss of the batch and updates the metrics.

        Args:
          query_embeddings: `[batch, dim]` (or `[batch, heads, dim]`, max-sim) float32.
          candidate_embeddings: `[num_candidates, dim]`; row `i < batch` is query `i`'s positive,
            extra rows are extra negatives.
          candidate_ids: `[num_candidates]` ids; needed for logQ and accidental-hit removal.
          sample_weight: `[batch]` weights of the queries.
          compute_metrics: Whether to update the factorized top-K metrics (slow; skip in training).
          compute_batch_metrics: Whether to update the in-batch metrics.
        """
        # Mixed precision: float16 tower outputs are scored in float32, so the logits, the loss
        # and the metrics are float32 (TFRS's Retrieval fails on float16 embeddings).
        query_embeddings = _float32(query_embeddings)
        candidate_embeddings = _float32(candidate_embeddings)
        if query_embeddings.shape.rank not in (2, 3) or candidate_embeddings.shape.rank != 2:
            raise ValueError(
                f"Expected query embeddings [batch, dim] (or [batch, heads, dim]) and candidate "
                f"embeddings [num_candidates, dim], got {query_embeddings.shape} and "
                f"{candidate_embeddings.shape}.")
        if self.reads_candidate_ids and candidate_ids is None:
            raise ValueError("candidate_ids are required when the logQ correction or "
                             "remove_accidental_hits is enabled; pass candidate_ids=... .")
        queries, candidates = query_embeddings, candidate_embeddings
        if self._sampling_table is not None:
            # Exact logQ (TFRS would clip p at 1e-6): q' = [q, 1], c' = [c, -T log p(c)], so
            # <q', c'> / T = <q, c> / T - log p(c) (max over heads: the term is per candidate).
            queries = tf.convert_to_tensor(queries)
            candidates = tf.convert_to_tensor(candidates, dtype=queries.dtype)
            probability = self.sampling_probability(candidate_ids)
            temperature = self._temperature if self._temperature is not None else 1.0
            correction = -temperature * tf.math.log(tf.cast(probability, candidates.dtype))
            candidates = tf.concat([candidates, correction[:, tf.newaxis]], axis=-1)
            ones = tf.ones_like(queries[..., :1])
            queries = tf.concat([queries, ones], axis=-1)
        loss_ids = candidate_ids
        context = tf.distribute.get_replica_context()
        if ((self.negatives or default_negatives()) == "global" and context is not None
                and context.num_replicas_in_sync > 1):
            candidates, gathered_ids = _gather_candidates(
                tf.convert_to_tensor(candidates), candidate_ids, context)
            if self._remove_accidental_hits:
                loss_ids = gathered_ids
        with _float32_policy():  # TFRS builds its loss layers in call: keep them float32
            loss = super().call(queries, candidates, sample_weight=sample_weight,
                                candidate_ids=loss_ids, compute_metrics=False,
                                compute_batch_metrics=compute_batch_metrics)
        if not compute_metrics or query_embeddings.shape.rank != 2:
            return loss
        batch = tf.shape(query_embeddings)[0]
        true_ids = candidate_ids[:batch] if (self.id_based_metrics
                                             and candidate_ids is not None) else None
        updates = [metric.update_state(query_embeddings, candidate_embeddings[:batch],
                                       true_candidate_ids=true_ids, sample_weight=sample_weight)
                   for metric in self.factorized_metrics]
        with tf.control_dependencies([u for u in updates if u is not None]):
            return tf.identity(loss)

    @property
    def reads_candidate_ids(self) -> bool:
        """Whether the loss reads candidate ids (logQ correction or accidental-hit removal)."""
        return self._sampling_table is not None or self._remove_accidental_hits

    def supports_unique_candidates(self) -> bool:
        """Whether `unique_candidates_loss` gives this task's training loss: no hard-negative
        mining and no in-batch metrics (both need the full `[batch, batch]` scores), and a
        single replica (several gather their candidates first)."""
        context = tf.distribute.get_replica_context()
        return (self._num_hard_negatives is None and not self._batch_metrics
                and (context is None or context.num_replicas_in_sync == 1))

    def unique_candidates_loss(self, query_embeddings: tf.Tensor,
                               unique_embeddings: tf.Tensor, positives: tf.Tensor,
                               counts: tf.Tensor, unique_ids: Optional[tf.Tensor] = None,
                               sample_weight: Optional[tf.Tensor] = None) -> tf.Tensor:
        """The in-batch softmax loss of `call`, from the batch's distinct candidates.

        When the batch's candidates repeat (popular items), the `[batch, batch]` scores of
        `call` hold each distinct candidate's column `n_u` times. Scoring the `U` distinct
        candidates once and adding `log n_u` to their logits gives the same softmax
        normaliser, so the same loss and gradients, from a `[batch, U]` score matrix. With
        `remove_accidental_hits`, a query's own candidate counts once (its duplicates are the
        masked accidental hits); the logQ term is per candidate, as in `call`.

        Args:
          query_embeddings: `[batch, dim]`.
          unique_embeddings: `[U, dim]`, the embeddings of the distinct candidates.
          positives: int `[batch]`: row of `unique_embeddings` that is query `i`'s positive.
          counts: `[U]`: how often each distinct candidate occurs in the batch.
          unique_ids: `[U]` ids of the distinct candidates (needed for the logQ correction).
          sample_weight: `[batch]` weights of the queries.

        Returns:
          The summed loss (the value `call` returns for the full batch).
        """
        if not self.supports_unique_candidates():
            raise ValueError("unique_candidates_loss cannot reproduce this task's loss (hard "
                             "negatives, in-batch metrics or several replicas); call the task.")
        queries = _float32(query_embeddings)
        candidates = _float32(unique_embeddings)
        if queries.shape.rank != 2:
            raise ValueError(f"unique_candidates_loss needs [batch, dim] queries, got "
                             f"{queries.shape}.")
        positives = tf.cast(tf.reshape(positives, [-1]), tf.int32)
        scores = tf.matmul(queries, candidates, transpose_b=True)
        if self._temperature is not None:
            scores = scores / self._temperature
        if self._sampling_table is not None:
            if unique_ids is None:
                raise ValueError("unique_ids are required for the logQ correction.")
            scores = scores - tf.math.log(self.sampling_probability(unique_ids))[tf.newaxis, :]
        log_counts = tf.math.log(tf.cast(counts, tf.float32))[tf.newaxis, :]
        if self._remove_accidental_hits:
            own = tf.one_hot(positives, tf.shape(candidates)[0], dtype=tf.float32)
            log_counts = log_counts * (1.0 - own)  # the positive's column counts once
        positive_scores = tf.gather(scores, positives, batch_dims=1)
        losses = tf.reduce_logsumexp(scores + log_counts, axis=1) - positive_scores
        if sample_weight is not None:
            losses = losses * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        return tf.reduce_sum(losses)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "temperature": self._temperature,
            "num_hard_negatives": self._num_hard_negatives,
            "remove_accidental_hits": self._remove_accidental_hits,
            "sampling_vocabulary": (list(self.sampling_vocabulary)
                                    if self.sampling_vocabulary is not None else None),
            "sampling_counts": (list(self.sampling_counts)
                                if self.sampling_counts is not None else None),
            "id_based_metrics": self.id_based_metrics,
            "negatives": self.negatives,
        })
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Retrieval":
        config = {k: v for k, v in config.items() if k not in ("trainable", "dtype")}
        return cls(**config)


def _float32(embeddings) -> tf.Tensor:
    """A float16 (mixed precision) tensor cast to float32; others unchanged."""
    embeddings = tf.convert_to_tensor(embeddings)
    return tf.cast(embeddings, tf.float32) if embeddings.dtype == tf.float16 else embeddings


@contextlib.contextmanager
def _float32_policy():
    """The global Keras policy set to float32 inside the block (mixed precision: TFRS creates
    `RemoveAccidentalHits` & co. during `call`, which would cast their float32 labels to
    float16 and fail, TFRS issue #498)."""
    previous = tf.keras.mixed_precision.global_policy()
    if previous.name == "float32":
        yield
        return
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
