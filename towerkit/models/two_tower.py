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

    Call returns `{"query_embedding": [batch, dim], "candidate_embedding": [batch, dim]}`.

    References:
      Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
      Recommendations", RecSys 2019: https://doi.org/10.1145/3298689.3346996
    """

    def __init__(self, query_model: tf.keras.layers.Layer,
                 candidate_model: tf.keras.layers.Layer, task: Optional[Retrieval] = None,
                 candidate_id_key: Optional[str] = None, sample_weight_key: Optional[str] = None,
                 **kwargs):
        super().__init__(**kwargs)
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

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query_embeddings = self.query_model(features, training=training)
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
        }

    @classmethod
    def from_config(cls, config: dict) -> "TwoTowerModel":
        config = dict(config)
        for key in ("query_model", "candidate_model", "task"):
            config[key] = tf.keras.layers.deserialize(config[key])
        return cls(**config)
