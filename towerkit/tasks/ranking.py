"""Ranking task (rating regression or binary feedback): `tfrs.tasks.Ranking` preconfigured.

Loss reduction: unlike `Retrieval` (which sums over the batch), the ranking losses here are
Keras' defaults, i.e. **averaged** over the batch (`SUM_OVER_BATCH_SIZE`).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

__all__ = ["Ranking"]

_KINDS = ("regression", "binary")


@tf.keras.utils.register_keras_serializable(package="towerkit")
class Ranking(tfrs.tasks.Ranking):
    """A pointwise ranking task.

    - `kind="regression"`: mean squared error, metric `root_mean_squared_error` (explicit ratings).
    - `kind="binary"`: sigmoid cross-entropy on logits, metrics `auc` and `binary_accuracy`
      (clicks, "rating >= 4"); the model outputs logits.

    Example:
    ```python
    task = Ranking("regression")
    loss = task(labels=ratings, predictions=model_outputs)  # mean over the batch
    ```

    Args:
      kind: str. `"regression"` or `"binary"`.

    References:
      TFRS basic ranking tutorial: https://www.tensorflow.org/recommenders/examples/basic_ranking
    """

    def __init__(self, kind: str = "regression", name: Optional[str] = None, **kwargs):
        if kind not in _KINDS:
            raise ValueError(f"Ranking kind must be one of {_KINDS}, got {kind!r}.")
        if kind == "regression":
            loss = tf.keras.losses.MeanSquaredError()
            metrics = [tf.keras.metrics.RootMeanSquaredError(name="root_mean_squared_error")]
        else:
            loss = tf.keras.losses.BinaryCrossentropy(from_logits=True)
            metrics = [tf.keras.metrics.AUC(from_logits=True, name="auc"),
                       tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="binary_accuracy")]
        super().__init__(loss=loss, metrics=metrics, name=name, **kwargs)
        self.kind = kind

    def call(self, labels: tf.Tensor, predictions: tf.Tensor,
             sample_weight: Optional[tf.Tensor] = None, training: bool = False,
             compute_metrics: bool = True) -> tf.Tensor:
        """Returns the batch-mean loss; `labels` and `predictions` are `[batch]` or `[batch, 1]`."""
        labels = tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
        predictions = tf.convert_to_tensor(predictions)
        if predictions.dtype == tf.float16:  # mixed precision: loss and metrics in float32
            predictions = tf.cast(predictions, tf.float32)
        if predictions.shape.rank not in (1, 2) or (predictions.shape.rank == 2
                                                     and predictions.shape[-1] not in (1, None)):
            raise ValueError(f"Ranking predictions must be [batch] or [batch, 1], got "
                             f"{predictions.shape}.")
        predictions = tf.reshape(predictions, [-1, 1])
        return super().call(labels, predictions, sample_weight=sample_weight, training=training,
                            compute_metrics=compute_metrics)

    def get_config(self) -> dict:
        config = super().get_config()
        config["kind"] = self.kind
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Ranking":
        return cls(kind=config.get("kind", "regression"), name=config.get("name"))
