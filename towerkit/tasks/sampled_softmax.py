"""Sampled softmax over a candidate table, with logQ correction and accidental-hit removal."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from towerkit.tasks.global_batch import global_mean

__all__ = ["SampledSoftmax"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class SampledSoftmax(tf.keras.layers.Layer):
    """Softmax cross-entropy of each query's target against `num_negatives` sampled candidates.

    Negatives `n_1..n_S` are drawn (with replacement, shared by the batch) from the proposal
    `Q` over the rows of the candidate table. With logQ correction every logit is corrected by
    the log expected count of its candidate,
    `s(q, c) = <q, e_c> / temperature - log(S * Q(c))`, which makes the sampled loss an
    estimate of the full softmax; a negative equal to the query's target (an accidental hit)
    is masked out. The loss of one query is `logsumexp(s_target, s_n1, ..., s_nS) - s_target`.

    With `num_negatives=None` the softmax runs over the whole table (exact, no sampling and no
    correction); row 0 (padding) is never a candidate in either mode.

    Example:
    ```python
    task = SampledSoftmax(sampling_probability=item_frequency, num_negatives=500)
    loss = task(user_vectors, target_items, item_table)
    ```

    Args:
      sampling_probability: Sequence[float] `[num_candidates]` or None. The proposal `Q` over
        table rows (normalised here; row 0 is forced to 0). None: uniform over rows `1..`.
      num_negatives: int or None. Negatives per batch; None for the full softmax.
      remove_accidental_hits: bool. Mask sampled negatives equal to the target.
      temperature: float. Divides the dot products.
      seed: int or None. Op seed of the sampler.

    Call args:
      query_embeddings: `[batch, dim]`.
      target_ids: `[batch]` int rows of the positive candidates.
      candidate_embeddings: `[num_candidates, dim]`, the table.
      negative_ids: optional `[S]` int rows to use instead of sampling (tests, hard negatives).
      sample_weight: optional `[batch]` weights.

    Returns:
      Scalar: the mean loss over the batch; with `sample_weight`, the weighted mean
      `sum_i w_i l_i / sum_i w_i` (0 when every weight is 0). Under a `tf.distribute` strategy
      with several replicas the denominator is the GLOBAL batch's (all-reduced), so the
      replicas' losses sum to the global mean and their summed gradients equal the
      single-device ones; sampled negatives are then drawn per replica.

    References:
      Jean et al., "On Using Very Large Target Vocabulary for Neural Machine Translation",
      ACL 2015 (sampled softmax): https://arxiv.org/abs/1412.2007;
      Bengio and Senecal, "Adaptive Importance Sampling to Accelerate Training of a Neural
      Probabilistic Language Model", IEEE TNN 2008 (the -log Q correction).
    """

    def __init__(self, sampling_probability: Optional[Sequence[float]] = None,
                 num_negatives: Optional[int] = None, remove_accidental_hits: bool = True,
                 temperature: float = 1.0, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if num_negatives is not None and (not isinstance(num_negatives, (int, np.integer))
                                          or num_negatives < 1):
            raise ValueError(f"num_negatives must be a positive int or None, got {num_negatives!r}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        self.num_negatives = None if num_negatives is None else int(num_negatives)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.temperature = float(temperature)
        self.seed = seed
        self.sampling_probability = None
        self._log_q = None
        if sampling_probability is not None:
            q = np.asarray(sampling_probability, dtype=np.float64).copy()
            if q.ndim != 1 or len(q) < 2 or np.any(q < 0) or not np.all(np.isfinite(q)):
                raise ValueError("sampling_probability must be a 1-D array of >= 2 non-negative "
                                 "finite numbers, one per table row.")
            q[0] = 0.0
            if q.sum() <= 0:
                raise ValueError("sampling_probability puts no mass on rows 1..; pass item "
                                 "frequencies.")
            q /= q.sum()
            self.sampling_probability = q.tolist()
            # Rows never proposed (Q = 0) can still be targets: their correction uses the
            # smallest positive Q instead of log 0 = -inf.
            floor = q[1:][q[1:] > 0].min()
            self._log_q = tf.constant(np.log(np.where(np.arange(len(q)) > 0,
                                                      np.maximum(q, floor), 1.0)), tf.float32)
            self._sample_log_q = tf.constant(
                np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), -np.inf), tf.float32)

    def _proposal_log_q(self, num_rows) -> tuple[tf.Tensor, tf.Tensor]:
        """(log Q used for sampling, log Q used for the correction), `[num_rows]` each."""
        if self._log_q is not None:
            tf.debugging.assert_equal(
                tf.shape(self._log_q, out_type=tf.int64)[0], num_rows,
                message="sampling_probability must have one entry per candidate table row")
            return self._sample_log_q, self._log_q
        uniform = tf.fill([num_rows - 1], -tf.math.log(tf.cast(num_rows - 1, tf.float32)))
        return (tf.concat([[-np.inf], uniform], axis=0), tf.concat([[0.0], uniform], axis=0))

    def call(self, query_embeddings: tf.Tensor, target_ids: tf.Tensor,
             candidate_embeddings: tf.Tensor, negative_ids: Optional[tf.Tensor] = None,
             sample_weight: Optional[tf.Tensor] = None) -> tf.Tensor:
        q = tf.convert_to_tensor(query_embeddings, tf.float32)
        table = tf.convert_to_tensor(candidate_embeddings, tf.float32)
        target_ids = tf.cast(tf.reshape(target_ids, [-1]), tf.int64)
        if q.shape.rank != 2 or table.shape.rank != 2:
            raise ValueError(f"query_embeddings must be [batch, dim] and candidate_embeddings "
                             f"[num_candidates, dim]; got {q.shape} and {table.shape}.")
        num_rows = tf.shape(table, out_type=tf.int64)[0]
        if self.num_negatives is None and negative_ids is None:
            logits = tf.matmul(q, table, transpose_b=True) / self.temperature
            padding = tf.equal(tf.range(num_rows), 0)
            logits = tf.where(padding[tf.newaxis, :], tf.float32.min, logits)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(target_ids, logits)
        else:
            sample_log_q, log_q = self._proposal_log_q(num_rows)
            if negative_ids is None:
                negative_ids = tf.random.categorical(sample_log_q[tf.newaxis, :], self.num_negatives,
                                                     dtype=tf.int64, seed=self.seed)[0]
            negative_ids = tf.cast(tf.reshape(negative_ids, [-1]), tf.int64)
            num_sampled = tf.cast(tf.shape(negative_ids)[0], tf.float32)
            positive = tf.reduce_sum(q * tf.gather(table, target_ids), axis=1) / self.temperature
            positive -= tf.math.log(num_sampled) + tf.gather(log_q, target_ids)
            negative = tf.matmul(q, tf.gather(table, negative_ids), transpose_b=True)
            negative = negative / self.temperature - (
                tf.math.log(num_sampled) + tf.gather(log_q, negative_ids))[tf.newaxis, :]
            if self.remove_accidental_hits:
                hits = tf.equal(target_ids[:, tf.newaxis], negative_ids[tf.newaxis, :])
                negative = tf.where(hits, tf.float32.min, negative)
            logits = tf.concat([positive[:, tf.newaxis], negative], axis=1)
            losses = tf.reduce_logsumexp(logits, axis=1) - positive
        weights = (None if sample_weight is None
                   else tf.cast(tf.reshape(sample_weight, [-1]), losses.dtype))
        # Under a strategy: this replica's sum over the GLOBAL batch's weight, so the
        # optimizer's sum of the replicas' gradients is the single-device gradient.
        return global_mean(losses, weights)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"sampling_probability": self.sampling_probability,
                       "num_negatives": self.num_negatives,
                       "remove_accidental_hits": self.remove_accidental_hits,
                       "temperature": self.temperature, "seed": self.seed})
        return config
