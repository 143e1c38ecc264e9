"""Sequential retrieval models: a query tower over a user's behaviour scored against an item
embedding table, and the serving wrapper that takes raw item ids.

These are the models the sequential recipes (`youtube_dnn`, `gru`, `sasrec`, `mt_ebr`, `mind`,
`comirec_dr`, `comirec_sa`) train and export; they work on any `tf.data` input of feature dicts:
`history` (int item indices `[batch, max_history]`, 0 = padding), `history_length`
(`[batch]`), `target` (the next item's index, for training) and whatever else the query tower
reads (e.g. `example_age`, profile features). `towerkit.data.sequential_protocol` builds such
datasets from any interaction log.

Example:
  >>> items = tf.keras.layers.Embedding(num_items + 1, 32)
  >>> model = SequentialRetrievalModel(GRUTower(items), items, SampledSoftmax(...))
  >>> model.compile(tf.keras.optimizers.Adam(1e-3)); model.fit(train_ds)
  >>> serving = ServingQueryModel(item_ids[1:], model, max_history=20)
  >>> serving({"history": [[b"sku-1", b"sku-7", b""]], "history_length": [2]})
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.tasks.sampled_softmax import SampledSoftmax

__all__ = ["SequentialRetrievalModel", "MultiInterestRetrievalModel", "ServingQueryModel"]


class SequentialRetrievalModel(tfrs.Model):
    """A query tower over behaviour features scored against an item embedding table.

    Args:
      query_tower: a Keras layer mapping the feature dict to `[batch, dim]` (or
        `[batch, num_interests, dim]`; the loss then takes the best interest per candidate).
      candidate_embedding: tf.keras.layers.Embedding `[num_items + 1, dim]`, row 0 padding.
      task: `SampledSoftmax` (sampled or full softmax over the table) or `Retrieval`
        (in-batch softmax; logQ and accidental hits as configured in it).
      l2_normalize: bool. Cosine scores (divide by a temperature in the task).
      item_attributes: dict name -> np.ndarray `[num_items + 1, m]` int (0 = padding), e.g.
        genres. Each adds the feature `history_<name>` `[batch, max_history * m]`, the
        attributes of the history items, derived inside the model (so serving needs only the
        history).
      example_age_scale: `(t_max, span)` or None. With it, a `query_timestamp` feature (int64
        Unix seconds, `[batch]`) becomes the query's `example_age = (t_max - t) / span`, the
        training examples' scale (`SequentialProtocol.example_age_scale`); a timestamp <= 0
        means "unknown" and gives age 0 (the end of the training window). Ages of queries
        after `t_max` are negative (the feature is extrapolated, not clipped). Features
        without `query_timestamp` (training examples) keep their `example_age`.

    References:
      Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016
      (next-item retrieval as a softmax over the item table, example age):
      https://doi.org/10.1145/2959100.2959190
    """

    def __init__(self, query_tower, candidate_embedding, task, l2_normalize: bool = False,
                 item_attributes: Optional[dict] = None,
                 example_age_scale: Optional[tuple] = None):
        super().__init__()
        self.example_age_scale = (None if example_age_scale is None else
                                  (int(example_age_scale[0]), int(example_age_scale[1])))
        if self.example_age_scale is not None and self.example_age_scale[1] < 1:
            raise ValueError(f"example_age_scale span must be >= 1 s, got {example_age_scale}.")
        self.query_tower = query_tower
        self.candidate_embedding = candidate_embedding
        self.task = task
        self.l2_normalize = l2_normalize
        self._item_attributes = {name: tf.constant(np.asarray(table, np.int64))
                                 for name, table in (item_attributes or {}).items()}

    def query(self, features, training: bool = False) -> tf.Tensor:
        if self.example_age_scale is not None and "query_timestamp" in features:
            features = dict(features)
            t_max, span = self.example_age_scale
            stamp = tf.cast(tf.reshape(features["query_timestamp"], [-1]), tf.int64)
            # int64 difference first: float32 cannot hold Unix seconds to the second.
            age = tf.cast(t_max - stamp, tf.float32) / float(span)
            features["example_age"] = tf.where(stamp > 0, age, 0.0)
        if self._item_attributes:
            features = dict(features)
            history = tf.cast(features["history"], tf.int64)
            for name, table in self._item_attributes.items():
                values = tf.gather(table, history)  # [batch, max_history, m]
                features[f"history_{name}"] = tf.reshape(
                    values, [tf.shape(values)[0], -1])
        q = self.query_tower(features, training=training)
        return tf.math.l2_normalize(q, axis=-1) if self.l2_normalize else q

    def candidates(self) -> tf.Tensor:
        table = self.candidate_embedding.embeddings
        return tf.math.l2_normalize(table, axis=-1) if self.l2_normalize else table

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        q = self.query(features, training=training)
        table = self.candidates()
        target = tf.cast(features["target"], tf.int64)
        if q.shape.rank == 3:  # multi-interest: the interest closest to the target scores it
            best = tf.argmax(tf.einsum("bkd,bd->bk", q, tf.gather(table, target)), axis=1)
            q = tf.gather(q, best, batch_dims=1)
        if isinstance(self.task, SampledSoftmax):
            return self.task(q, target, table)
        return self.task(q, tf.gather(table, target), candidate_ids=target,
                         compute_metrics=False)


class ServingQueryModel(tf.keras.Model):
    """Raw serving inputs -> query embeddings: string item ids through a lookup, then the tower.

    Args:
      item_ids: the catalogue's item ids (strings), index order, without padding (`item_ids[1:]`).
      query_model: `SequentialRetrievalModel` (its `query` is applied).
      max_history: int. Width of `history`.
      user_feature_vocabularies: dict name -> sorted raw values (int-valued) of the profile
        features the tower uses; raw values are mapped to codes `1..` (unknown -> 0).
    """

    def __init__(self, item_ids, query_model: SequentialRetrievalModel, max_history: int,
                 user_feature_vocabularies: Optional[dict] = None):
        super().__init__()
        vocab = [i.decode() if isinstance(i, bytes) else str(i) for i in item_ids]
        # OOV index 0 == padding index: unknown items are ignored.
        self.lookup = tf.keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=1,
                                                   mask_token=None)
        self.user_lookups = {
            name: tf.keras.layers.IntegerLookup(
                vocabulary=np.asarray(values).astype(np.int64).tolist(), num_oov_indices=1,
                mask_token=None, name=f"{name}_lookup")
            for name, values in (user_feature_vocabularies or {}).items()}
        self.model = query_model
        self.max_history = max_history

    def known_queries(self, inputs) -> tf.Tensor:
        """bool `[batch]`: True where the history holds at least one catalogue item within
        `history_length` (False: an empty or all-unknown history, answered as a fallback)."""
        ids = self.lookup(tf.convert_to_tensor(inputs["history"]))
        length = tf.cast(tf.reshape(inputs["history_length"], [-1, 1]), tf.int64)
        inside = tf.range(tf.shape(ids, out_type=tf.int64)[1])[tf.newaxis, :] < length
        return tf.reduce_any(tf.logical_and(inside, ids > 0), axis=1)

    def call(self, inputs, training: bool = False):
        history = tf.convert_to_tensor(inputs["history"])
        if history.dtype != tf.string:
            raise TypeError(f"'history' must hold item id strings, got {history.dtype.name}.")
        ids = self.lookup(history)
        length = tf.cast(tf.reshape(inputs["history_length"], [-1, 1]), tf.int64)
        ids = tf.where(tf.range(tf.shape(ids, out_type=tf.int64)[1])[tf.newaxis, :] < length,
                       ids, tf.zeros_like(ids))
        features = {"history": ids,
                    "history_length": tf.cast(tf.reshape(inputs["history_length"], [-1]),
                                              tf.int32)}
        for name, lookup in self.user_lookups.items():
            features[name] = lookup(tf.cast(inputs[name], tf.int64))
        if "query_timestamp" in inputs:
            features["query_timestamp"] = tf.cast(tf.reshape(inputs["query_timestamp"], [-1]),
                                                  tf.int64)
        return self.model.query(features, training=False)


class MultiInterestRetrievalModel(SequentialRetrievalModel):
    """`SequentialRetrievalModel` trained through the tower's label-aware readout.

    `query` returns the interests `[batch, num_interests, dim]` (retrieval); `compute_loss`
    reads one vector per target with `query_tower.training_outputs`, feeds it to the task and
    adds the tower's interest-diversity penalty (0 unless `diversity_weight > 0`).

    References:
      Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall",
      CIKM 2019 (label-aware attention in training): https://arxiv.org/abs/1904.08030
      Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020
      (the interest closest to the target trains): https://arxiv.org/abs/2005.09347
    """

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        table = self.candidates()
        target = tf.cast(features["target"], tf.int64)
        target_embeddings = tf.gather(table, target)
        q, penalty = self.query_tower.training_outputs(features, target_embeddings,
                                                       training=training)
        if self.l2_normalize:
            q = tf.math.l2_normalize(q, axis=-1)
        if isinstance(self.task, SampledSoftmax):
            return self.task(q, target, table) + penalty
        return self.task(q, target_embeddings, candidate_ids=target,
                         compute_metrics=False) + penalty
