"""Joint retrieval + ranking model with loss weights (the TFRS multitask tutorial's model)."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from towerkit.models.mlp import MLP
from towerkit.models.model import Model
from towerkit.tasks import Ranking, Retrieval

__all__ = ["MultiTaskModel"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class MultiTaskModel(Model):
    """Shares the query and candidate towers between a retrieval and a ranking task.

    `loss = retrieval_weight * retrieval_loss + ranking_weight * ranking_loss`. Mind the scales:
    the retrieval loss is summed over the batch while the ranking loss is averaged, so with
    batch 8192 equal weights let retrieval dominate (the TFRS tutorial sweeps the weights).

    Example:
    ```python
    model = MultiTaskModel(user_tower, movie_tower, MLP([256, 64, 1]), Retrieval(),
                           Ranking("regression"), retrieval_weight=1.0, ranking_weight=1.0)
    ```

    Args:
      query_model: Layer mapping the feature dict to `[batch, dim]`.
      candidate_model: Layer mapping the feature dict to `[batch, dim]`.
      score_model: Layer mapping `[batch, 2 * dim]` to `[batch, 1]` ratings.
      retrieval_task: Retrieval.
      ranking_task: Ranking.
      retrieval_weight: float >= 0.
      ranking_weight: float >= 0.
      label_key: str. Feature holding the rating.
      candidate_id_key: str or None. As in `TwoTowerModel`.

    Call returns `{"query_embedding", "candidate_embedding", "score"}`.

    References:
      TFRS multitask tutorial: https://www.tensorflow.org/recommenders/examples/multitask
    """

    def __init__(self, query_model: tf.keras.layers.Layer,
                 candidate_model: tf.keras.layers.Layer,
                 score_model: Optional[tf.keras.layers.Layer] = None,
                 retrieval_task: Optional[Retrieval] = None,
                 ranking_task: Optional[Ranking] = None, retrieval_weight: float = 1.0,
                 ranking_weight: float = 1.0, label_key: str = "rating",
                 candidate_id_key: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        if retrieval_weight < 0 or ranking_weight < 0 or retrieval_weight + ranking_weight == 0:
            raise ValueError(f"Loss weights must be >= 0 and not both 0, got retrieval="
                             f"{retrieval_weight}, ranking={ranking_weight}.")
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.score_model = score_model if score_model is not None else MLP([256, 64, 1])
        self.retrieval_task = retrieval_task if retrieval_task is not None else Retrieval()
        self.ranking_task = ranking_task if ranking_task is not None else Ranking("regression")
        self.retrieval_weight = float(retrieval_weight)
        self.ranking_weight = float(ranking_weight)
        self.label_key = label_key
        self.candidate_id_key = candidate_id_key

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> dict:
        query = self.query_model(features, training=training)
        candidate = self.candidate_model(features, training=training)
        score = self.score_model(tf.concat([query, candidate], axis=-1), training=training)
        return {"query_embedding": query, "candidate_embedding": candidate, "score": score}

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if self.label_key not in features:
            raise ValueError(f"The batch lacks the label feature {self.label_key!r}; it has "
                             f"{sorted(features)}.")
        outputs = self(features, training=training)
        ids = features[self.candidate_id_key] if self.candidate_id_key else None
        retrieval_loss = self.retrieval_task(outputs["query_embedding"],
                                             outputs["candidate_embedding"], candidate_ids=ids,
                                             compute_metrics=not training)
        ranking_loss = self.ranking_task(labels=features[self.label_key],
                                         predictions=outputs["score"], training=training)
        return self.retrieval_weight * retrieval_loss + self.ranking_weight * ranking_loss

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "query_model": tf.keras.layers.serialize(self.query_model),
            "candidate_model": tf.keras.layers.serialize(self.candidate_model),
            "score_model": tf.keras.layers.serialize(self.score_model),
            "retrieval_task": tf.keras.layers.serialize(self.retrieval_task),
            "ranking_task": tf.keras.layers.serialize(self.ranking_task),
            "retrieval_weight": self.retrieval_weight,
            "ranking_weight": self.ranking_weight,
            "label_key": self.label_key,
            "candidate_id_key": self.candidate_id_key,
        }

    @classmethod
    def from_config(cls, config: dict) -> "MultiTaskModel":
        config = dict(config)
        for key in ("query_model", "candidate_model", "score_model", "retrieval_task",
                    "ranking_task"):
            config[key] = tf.keras.layers.deserialize(config[key])
        return cls(**config)
