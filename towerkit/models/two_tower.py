"""The two-tower retrieval model."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from towerkit.features import INDEX_SUFFIX
from towerkit.models.model import Model
from towerkit.tasks import Retrieval

__all__ = ["TwoTowerModel"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class TwoTowerModel(Model):
    """A two-tower retrieval model trained with an in-batch softmax.

    Each training example is a (query, positive candidate) pair in one feature dict; the query
    tower and the candidate tower each read their own keys. The loss is `task`'s: summed (not
    averaged) over the batch, as in TFRS. Top-K metrics are only computed in evaluation.

    Example:
    ```python
    model = TwoTowerModel(query_tower, candidate_tower, Retrieval(metrics=...),
                          candidate_id_key="item_id")
    model.compile(tf.keras.optimizers.Adagrad(0.1))
    model.fit(train.batch(8192), epochs=3)
    ```

    Args:
      query_model: Layer mapping the feature dict to `[batch, dim]` query embeddings.
      candidate_model: Layer mapping the feature dict to `[batch, dim]` candidate embeddings.
      task: Retrieval. The loss (temperature, logQ, hard negatives, accidental hits, metrics).
      candidate_id_key: str or None. Feature holding candidate ids (for logQ, accidental-hit
        removal and id-based metrics).
      sample_weight_key: str or None. Feature holding per-example weights.
      unique_candidates: bool. In training, when the candidate tower reads nothing but the
        candidate id (`candidate_id_key`, or its looked-up index) and has no dropout, embed
        each distinct candidate of the batch once and score the queries against those
        (`Retrieval.unique_candidates_loss`: the same loss and gradients from a
        `[batch, distinct]` instead of a `[batch, batch]` score matrix; popular items repeat
        in a batch). Falls back to the full matrix whenever that would change the loss.

    Call returns `{"query_embedding": [batch, dim], "candidate_embedding": [batch, dim]}`.

    References:
      Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
      Recommendations", RecSys 2019: https://doi.org/10.1145/3298689.3346996
    """

    def __init__(self, query_model: tf.keras.layers.Layer,
                 candidate_model: tf.keras.layers.Layer, task: Optional[Retrieval] = None,
                 candidate_id_key: Optional[str] = None, sample_weight_key: Optional[str] = None,
                 unique_candidates: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.unique_candidates = bool(unique_candidates)
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.task = task if task is not None else Retrieval()
        self.candidate_id_key = candidate_id_key
        self.sample_weight_key = sample_weight_key

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> dict:
        return {"query_embedding": self.query_model(features, training=training),
                "candidate_embedding": self.candidate_model(features, training=training)}

    def lookup_ids(self, features: Mapping[str, tf.Tensor]) -> dict:
        """The batch with both towers' ids replaced by row indices, for the input pipeline.

        `dataset.map(model.lookup_ids)` looks every id up once (cache the result); the raw id
        features are dropped unless the task reads them (`candidate_id_key`) or a tower has no
        index for them. Training on the result gives the same numbers as on raw ids.
        """
        indices = {}
        for tower in (self.query_model, self.candidate_model):
            if hasattr(tower, "lookup_ids"):
                indices.update(tower.lookup_ids(features))
        keep = {self.candidate_id_key, self.sample_weight_key}
        out = {k: v for k, v in features.items()
               if k in keep or k + INDEX_SUFFIX not in indices}
        out.update(indices)
        return out

    def _get(self, features: Mapping[str, tf.Tensor], key: Optional[str]):
        if key is None:
            return None
        if key not in features:
            raise ValueError(f"The batch lacks feature {key!r} that this model was configured "
                             f"to read; the batch has {sorted(features)}.")
        return features[key]

    def _unique_candidate_key(self, features: Mapping[str, tf.Tensor]) -> Optional[str]:
        """The feature to find the batch's distinct candidates by, or None when scoring them
        once would not give the full-matrix loss."""
        if not (self.unique_candidates and self.candidate_id_key
                and isinstance(self.task, Retrieval) and self.task.supports_unique_candidates()):
            return None
        names = getattr(self.candidate_model, "feature_names", None)
        names = names() if callable(names) else names
        if list(names or ()) != [self.candidate_id_key] or any(
                isinstance(layer, tf.keras.layers.Dropout)
                for layer in self.candidate_model.submodules):
            return None
        index_key = self.candidate_id_key + INDEX_SUFFIX
        # The looked-up index merges only ids with one embedding row (the OOV ones); the raw
        # ids are needed where the loss reads ids (logQ, accidental hits).
        if index_key in features and not self.task.reads_candidate_ids:
            return index_key
        return self.candidate_id_key if self.candidate_id_key in features else None

    def _unique_candidates_loss(self, features, key: str, query_embeddings,
                                training: bool) -> tf.Tensor:
        values = tf.reshape(features[key], [-1])
        distinct, positives = tf.unique(values)
        num = tf.shape(distinct)[0]
        first = tf.math.unsorted_segment_min(tf.range(tf.shape(values)[0]), positives, num)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(positives), positives, num)
        reads = [k for k in (self.candidate_id_key, self.candidate_id_key + INDEX_SUFFIX)
                 if k in features]
        unique_embeddings = self.candidate_model({k: tf.gather(features[k], first)
                                                  for k in reads}, training=training)
        ids = (tf.gather(tf.reshape(features[self.candidate_id_key], [-1]), first)
               if self.candidate_id_key in features else None)
        return self.task.unique_candidates_loss(
            query_embeddings, unique_embeddings, positives, counts, unique_ids=ids,
            sample_weight=self._get(features, self.sample_weight_key))

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query_embeddings = self.query_model(features, training=training)
        key = self._unique_candidate_key(features) if training else None
        if key is not None:
            return self._unique_candidates_loss(features, key, query_embeddings, training)
        candidate_embeddings = self.candidate_model(features, training=training)
        return self.task(query_embeddings, candidate_embeddings,
                         candidate_ids=self._get(features, self.candidate_id_key),
                         sample_weight=self._get(features, self.sample_weight_key),
                         compute_metrics=not training)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "query_model": tf.keras.layers.serialize(self.query_model),
            "candidate_model": tf.keras.layers.serialize(self.candidate_model),
            "task": tf.keras.layers.serialize(self.task),
            "candidate_id_key": self.candidate_id_key,
            "sample_weight_key": self.sample_weight_key,
            "unique_candidates": self.unique_candidates,
        }

    @classmethod
    def from_config(cls, config: dict) -> "TwoTowerModel":
        config = dict(config)
        for key in ("query_model", "candidate_model", "task"):
            config[key] = tf.keras.layers.deserialize(config[key])
        return cls(**config)
