"""The ranking model: predicts a rating (or a click logit) from query and candidate towers."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from towerkit.models.mlp import MLP
from towerkit.models.model import Model
from towerkit.tasks import Ranking

__all__ = ["RankingModel"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class RankingModel(Model):
    """Scores a (query, candidate) pair with `score_model(concat(query, candidate))`.

    With `Ranking("regression")` the output is the predicted rating and the loss the batch-mean
    squared error; with `Ranking("binary")` the output is a logit.

    Example:
    ```python
    model = RankingModel(user_tower, movie_tower, MLP([256, 64, 1]), Ranking("regression"),
                         label_key="rating")
    ```

    Args:
      query_model: Layer mapping the feature dict to `[batch, d_q]`.
      candidate_model: Layer mapping the feature dict to `[batch, d_c]`.
      score_model: Layer mapping `[batch, d_q + d_c]` to `[batch, 1]`.
      task: Ranking. The loss and metrics.
      label_key: str. Feature holding the label (rating, or 0/1 for `binary`).
      sample_weight_key: str or None. Feature holding per-example weights.

    Call returns `[batch, 1]` scores.

    References:
      TFRS basic ranking tutorial: https://www.tensorflow.org/recommenders/examples/basic_ranking
    """

    def __init__(self, query_model: tf.keras.layers.Layer,
                 candidate_model: tf.keras.layers.Layer,
                 score_model: Optional[tf.keras.layers.Layer] = None,
                 task: Optional[Ranking] = None, label_key: str = "rating",
                 sample_weight_key: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.score_model = score_model if score_model is not None else MLP([256, 64, 1])
        self.task = task if task is not None else Ranking("regression")
        self.label_key = label_key
        self.sample_weight_key = sample_weight_key

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        joint = tf.concat([self.query_model(features, training=training),
                           self.candidate_model(features, training=training)], axis=-1)
        return self.score_model(joint, training=training)

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if self.label_key not in features:
            raise ValueError(f"The batch lacks the label feature {self.label_key!r}; it has "
                             f"{sorted(features)}.")
        weights = features[self.sample_weight_key] if self.sample_weight_key else None
        return self.task(labels=features[self.label_key], predictions=self(features, training),
                         sample_weight=weights, training=training)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "query_model": tf.keras.layers.serialize(self.query_model),
            "candidate_model": tf.keras.layers.serialize(self.candidate_model),
            "score_model": tf.keras.layers.serialize(self.score_model),
            "task": tf.keras.layers.serialize(self.task),
            "label_key": self.label_key,
            "sample_weight_key": self.sample_weight_key,
        }

    @classmethod
    def from_config(cls, config: dict) -> "RankingModel":
        config = dict(config)
        for key in ("query_model", "candidate_model", "score_model", "task"):
            config[key] = tf.keras.layers.deserialize(config[key])
        return cls(**config)
